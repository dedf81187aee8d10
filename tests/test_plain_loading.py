"""docs/artifacts.md's block that loads an rftcli adapter folder with plain transformers and PEFT runs as
written in a fresh interpreter, without the library notices it silences; and the reason for its rftcli
lines: without them, the folder's processor fails to load where torchvision is missing, and loading
prints bitsandbytes' optional-kernel notice and a FutureWarning."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rftcli.stages import sft_coldstart

ROOT = Path(__file__).resolve().parent.parent
NOTICES = ("gemm_4bit_forward", "FutureWarning")
CHECK = '\nprint(type(model).__name__, type(processor).__name__, processor.image_processor.patch_size)\n'


def _block() -> str:
    text = (ROOT / "docs" / "artifacts.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
    return next(b for b in blocks if 'AutoProcessor.from_pretrained("out/grpo")' in b)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, dataset, tiny_model_dir) -> Path:
    """A cwd holding out/grpo: an adapter on a local base folder (its absolute path recorded)."""
    cwd = tmp_path_factory.mktemp("plain")
    sft_coldstart.run(sft_coldstart.Config(dataset=dataset, model=str(tiny_model_dir), out=cwd / "out" / "grpo",
                                           max_steps=1, batch_size=2))
    return cwd


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_documented_block_loads_an_adapter_folder_quietly(folder):
    done = _python(_block() + CHECK, folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["PeftModelForCausalLM", "Qwen2_5_VLProcessor", "14"]
    assert not [n for n in NOTICES if n in done.stderr], done.stderr


def test_without_rftcli_lines_the_notices_show_and_the_processor_needs_torchvision(folder):
    plain = "\n".join(line for line in _block().splitlines()
                      if "rftcli" not in line and not line.startswith(("quiet_loading", "ensure_processor")))
    done = _python(plain + CHECK, folder)
    assert "FutureWarning" in done.stderr  # PEFT reads transformers' deprecated is_gradient_checkpointing
    if importlib.util.find_spec("torchvision") is None:
        assert done.returncode != 0 and "Can't load video processor" in done.stderr
    done = _python(plain.replace('processor = AutoProcessor.from_pretrained("out/grpo")', "processor = None")
                   + "\nprint(type(model).__name__)\n", folder)
    assert done.returncode == 0 and done.stdout.split() == ["PeftModelForCausalLM"], done.stderr
