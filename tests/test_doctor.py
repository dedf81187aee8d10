"""`rftcli doctor` shows what a newcomer asks about first: matplotlib (the report's charts), the Hugging
Face cache folder hub models download to, and the free disk space there and in the working folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from rftcli import doctor


def test_doctor_storage_follows_hf_home_and_reports_free_disk(tmp_path):
    """In a fresh interpreter: huggingface_hub reads HF_HOME when imported."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_CACHE", None)
    code = "import json; from rftcli import doctor; print(json.dumps(doctor.storage()))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    assert st["hf_cache"] == str(tmp_path / "hf" / "hub") and st["workdir"] == str(tmp_path)
    free = shutil.disk_usage(tmp_path).free / 2**30
    assert abs(st["hf_cache_free_gib"] - free) < 1 and abs(st["workdir_free_gib"] - free) < 1  # folder not made yet


def test_doctor_table_lists_matplotlib_cache_folder_and_free_disk():
    info = doctor.report()
    assert "matplotlib" in info["versions"]
    rows = dict(doctor.rows(info))
    st = info["storage"]
    assert rows["matplotlib"] == (info["versions"]["matplotlib"] or "not installed")
    assert rows["Hugging Face cache"] == f"{st['hf_cache']} ({st['hf_cache_free_gib']} GiB free)"
    assert rows["working folder"] == f"{os.getcwd()} ({st['workdir_free_gib']} GiB free)"


def test_free_gib_of_a_path_not_made_yet_is_its_parents():
    assert doctor.free_gib("/") is not None
    assert doctor.free_gib("/no/such/folder/here") == doctor.free_gib("/")
