"""A full disk and a read-only output folder, for every stage, on real file systems.

Each case runs `rftcli` in a child process with its own mount namespace (`unshare -Urm`), its output on a
tmpfs mounted there: `-o ro` is a real read-only file system (EROFS), `-o size=N` one that fills up (real
ENOSPC) after the stage got going. The child lists and copies what the stage left on the mount before the
mount disappears with it. A read-only output must fail before any model is loaded (a spy stops the child
if one is), exit 2; a full disk exits 1. Both print one `error:` line naming the output, no traceback,
leave the inputs as they were, and leave nothing under the output's name and no temporary siblings; a
resumable work folder keeps only complete pieces, which a rerun with room continues from.

The tmpfs sizes were measured on the tiny model (a file takes whole 4 KiB pages): a rollout shard is
~20 KB, a LoRA checkpoint-N of the SFT run ~520 KB (optimizer.pt 286 KB), the adapter folder ~210 KB,
the merged model 1.2 MB, the eval folder ~55 KB.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rftcli.training import latest_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY = "builtin:tiny-qwen2.5-vl"

# The CLI with `load_model` replaced by a tripwire: an output check that comes after loading exits 99.
SPY = """
import sys
import rftcli.loading
def _tripwire(*args, **kwargs):
    sys.stderr.write("a model was loaded before the output was checked\\n")
    raise SystemExit(99)
rftcli.loading.load_model = _tripwire
from rftcli.cli import run
run()
"""


@pytest.fixture(scope="module", autouse=True)
def mount_namespaces(tmp_path_factory):
    """Skip the module where this process cannot make a mount namespace of its own."""
    target = tmp_path_factory.mktemp("probe-mount")
    if shutil.which("unshare") is None:
        pytest.skip("no `unshare` here: cannot mount a small or read-only file system for the child")
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {target}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"`unshare -Urm` + mount tmpfs is not allowed here: {probe.stderr.strip()}")


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    listing: list[str]
    """Paths left on the mount after the command, relative to it."""


@dataclass
class Outcome:
    first: Run
    kept: Path
    """A copy of what the first command left on the mount."""
    rerun: Run | None


def on_tmpfs(tmp_path: Path, options: str, args: list[str], *, spy: bool = False,
             rerun_with: tuple[str, list[str]] | None = None) -> Outcome:
    """Run `rftcli ARGS` with `tmp_path/mnt` a tmpfs mounted with `options` (ARGS put the output there);
    with `rerun_with` (new mount options, args), remount and run again on what the first run left."""
    mnt, report = tmp_path / "mnt", tmp_path / f"report-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    (report / "kept").mkdir(parents=True)
    python = [sys.executable, "-c", SPY] if spy else [sys.executable, "-m", "rftcli"]
    m, r = shlex.quote(str(mnt)), shlex.quote(str(report))

    def command(argv: list[str], tag: str) -> str:
        return (f"{shlex.join(python + argv)} > {r}/{tag}.out 2> {r}/{tag}.err; echo $? > {r}/{tag}.code\n"
                f"(cd {m} && find . -mindepth 1 | sort) > {r}/{tag}.listing\n")

    script = f"mount -t tmpfs -o {options} tmpfs {m} || exit 97\n" + command(args, "first")
    script += f"cp -a {m}/. {r}/kept/\n"
    if rerun_with is not None:
        script += f"mount -o remount,{rerun_with[0]} {m} || exit 98\n" + command(rerun_with[1], "rerun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    done = subprocess.run(["unshare", "-Urm", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    def read(tag: str) -> Run:
        text = {ext: (report / f"{tag}.{ext}").read_text() for ext in ("out", "err", "code", "listing")}
        listing = [line.removeprefix("./") for line in text["listing"].splitlines()]
        return Run(int(text["code"]), text["out"], text["err"], listing)

    return Outcome(read("first"), report / "kept", read("rerun") if rerun_with else None)


def error_line(run: Run, path: Path) -> str:
    """The one `error:` line, last on stderr, naming `path`; no traceback."""
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert f"error: {path}: " in errors[0] or f"error: {path}." in errors[0], errors[0]
    return errors[0]


def fingerprint(*paths: Path) -> dict[str, str]:
    """sha256 of every file under `paths`: inputs must come out byte for byte as they went in."""
    out = {}
    for path in paths:
        for f in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def no_temporaries(listing: list[str]) -> None:
    assert not [p for p in listing if ".tmp-" in p or ".probe-" in p or ".old-" in p], listing


def complete_parts(listing: list[str], kept: Path, parts: str) -> list[str]:
    """The shards left in a `<out>.parts` work folder: only finished ones (each a whole table), the run file
    and the lock; returns the shard names."""
    inside = [p.removeprefix(parts + "/") for p in listing if p.startswith(parts + "/")]
    shards = [p for p in inside if p.startswith("part-")]
    assert set(inside) - set(shards) <= {"run.json", ".lock"}, inside
    for shard in shards:
        assert shard.endswith(".parquet") and pq.read_table(kept / parts / shard).num_rows > 0, shard
    return shards


# ---------------------------------------------------------------- read-only output, every stage

READ_ONLY = {
    "prepare-data": (["prepare-data", "--input", "{dataset}", "--out", "{out}"], "sub/d.parquet"),
    "sft-coldstart": (["sft-coldstart", "-d", "{dataset}", "-m", "{tiny}", "--out", "{out}", "--max-steps", "1"],
                      "sft"),
    "rollout": (["rollout", "-d", "{dataset}", "-m", "{tiny}", "--out", "{out}", "--limit", "1"], "r.parquet"),
    "score": (["score", "--rollouts", "{rollouts}", "-r", "accuracy", "--out", "{out}"], "s.parquet"),
    "train-grpo": (["train-grpo", "-d", "{dataset}", "-m", "{tiny}", "-r", "accuracy", "--out", "{out}",
                    "--max-steps", "1"], "grpo"),
    "merge": (["merge", "--adapter", "{adapter}", "--out", "{out}"], "merged"),
    "eval": (["eval", "-d", "{dataset}", "-m", "{tiny}", "--out", "{out}", "--limit", "1"], "ev"),
}


@pytest.mark.parametrize("stage", list(READ_ONLY))
def test_read_only_output_fails_before_any_work(stage, tmp_path, dataset, rollouts, tiny_model_dir, sft_adapter):
    args, name = READ_ONLY[stage]
    out = tmp_path / "mnt" / name
    values = dict(dataset=dataset, rollouts=rollouts, tiny=tiny_model_dir, adapter=sft_adapter, out=out)
    before = fingerprint(dataset, rollouts, tiny_model_dir, sft_adapter)
    got = on_tmpfs(tmp_path, "ro", [a.format(**values) for a in args], spy=True)
    assert got.first.code == 2, got.first.stderr
    line = error_line(got.first, out)
    # `sub/` does not exist: the folder checked is the nearest one that does, the mount.
    assert line == f"error: {out}: cannot write here (Read-only file system)"
    assert got.first.listing == []
    assert fingerprint(dataset, rollouts, tiny_model_dir, sft_adapter) == before


def test_read_only_output_shows_the_traceback_with_debug(tmp_path, dataset):
    out = tmp_path / "mnt" / "d.parquet"
    got = on_tmpfs(tmp_path, "ro", ["--debug", "prepare-data", "--input", str(dataset), "--out", str(out)])
    assert got.first.code == 1
    assert "Traceback" in got.first.stderr and "OutputNotWritableError" in got.first.stderr


def test_check_output_leaves_a_writable_folder_as_it_was(tmp_path):
    from rftcli.atomic import OutputNotWritableError, check_output

    (tmp_path / "old.txt").write_text("x")
    check_output(tmp_path / "new" / "deeper" / "out.parquet", overwrite=False)
    check_output(tmp_path / "old.txt", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]
    with pytest.raises(OutputNotWritableError, match=r"old.txt/out.parquet: cannot write here \(.*old.txt is not a "
                                                     r"folder\)"):
        check_output(tmp_path / "old.txt" / "out.parquet", overwrite=False)


# ---------------------------------------------------------------- a full disk, every stage

def test_prepare_data_on_a_full_disk(tmp_path, dataset):
    out = tmp_path / "mnt" / "d.parquet"
    before = fingerprint(dataset)
    # 48 rows, ~16 KB of Parquet, into 8 KiB.
    got = on_tmpfs(tmp_path, "size=8k", ["prepare-data", "--input", str(dataset), "--out", str(out)])
    assert got.first.code == 1, got.first.stderr
    assert error_line(got.first, out) == (f"error: {out}: no space left on device; free some space or pick another "
                                          "--out, then rerun")
    assert got.first.listing == []
    assert fingerprint(dataset) == before


def test_rollout_on_a_full_disk_keeps_finished_shards_and_resumes(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "mnt" / "r.parquet"
    args = ["rollout", "-d", str(dataset), "-m", str(tiny_model_dir), "--out", str(out), "--limit", "6", "-n", "2",
            "--batch-size", "1", "--max-new-tokens", "8"]
    before = fingerprint(dataset, tiny_model_dir)
    # One prompt per ~20 KB shard: a few fit in 64 KiB, then one does not.
    got = on_tmpfs(tmp_path, "size=64k", args, rerun_with=("size=2m", args))
    assert got.first.code == 1, got.first.stderr
    line = error_line(got.first, out)
    assert "no space left on device" in line and f"continue from the finished parts in {out}.parts" in line
    assert "r.parquet" not in got.first.listing
    no_temporaries(got.first.listing)
    shards = complete_parts(got.first.listing, got.kept, "r.parquet.parts")
    assert 0 < len(shards) < 6
    assert got.rerun.code == 0, got.rerun.stderr
    assert got.rerun.listing == ["r.parquet"]
    assert f"resumed prompts │ {len(shards)} │" in " ".join(got.rerun.stdout.split())
    assert fingerprint(dataset, tiny_model_dir) == before


def test_score_on_a_full_disk(tmp_path, rollouts):
    out = tmp_path / "mnt" / "s.parquet"
    before = fingerprint(rollouts)
    got = on_tmpfs(tmp_path, "size=16k", ["score", "--rollouts", str(rollouts), "-r", "accuracy", "--out", str(out)])
    assert got.first.code == 1, got.first.stderr
    assert "no space left on device" in error_line(got.first, out)
    assert "s.parquet" not in got.first.listing
    no_temporaries(got.first.listing)
    complete_parts(got.first.listing, got.kept, "s.parquet.parts")
    assert fingerprint(rollouts) == before


def test_sft_checkpoint_cut_off_by_a_full_disk_is_not_resumed_from(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "mnt" / "sft"
    args = ["sft-coldstart", "-d", str(dataset), "-m", str(tiny_model_dir), "--out", str(out), "--max-steps", "2",
            "--batch-size", "2", "--save-steps", "1"]
    before = fingerprint(dataset, tiny_model_dir)
    # checkpoint-1 (~520 KB) fits in 900 KiB; checkpoint-2 runs out inside torch.save of optimizer.pt.
    got = on_tmpfs(tmp_path, "size=900k", args, rerun_with=("size=4m", args + ["--resume"]))
    assert got.first.code == 1, got.first.stderr
    line = error_line(got.first, out)
    assert line == (f"error: {out}: no space left on device; free some space, then rerun with --resume to continue "
                    f"from {out}.work/checkpoint-1")
    assert "sft" not in got.first.listing
    no_temporaries(got.first.listing)
    work = got.kept / "sft.work"
    assert (work / "checkpoint-2").is_dir() and not (work / "checkpoint-2" / "trainer_state.json").exists()
    assert latest_checkpoint(work) == work / "checkpoint-1"
    assert got.rerun.code == 0, got.rerun.stderr
    assert "resumed from step │ 1" in " ".join(got.rerun.stdout.split())
    assert {p.split("/")[0] for p in got.rerun.listing} == {"sft"}  # the work folder is gone
    assert "sft/adapter_model.safetensors" in got.rerun.listing
    assert fingerprint(dataset, tiny_model_dir) == before


def test_train_grpo_final_checkpoint_on_a_full_disk(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "mnt" / "grpo"
    before = fingerprint(dataset, tiny_model_dir)
    # The adapter folder (~210 KB) does not fit in 64 KiB: safetensors fails inside the atomic folder.
    got = on_tmpfs(tmp_path, "size=64k", ["train-grpo", "-d", str(dataset), "-m", str(tiny_model_dir), "-r", "accuracy",
                                          "--out", str(out), "--max-steps", "1", "-n", "2", "--batch-size", "2",
                                          "--max-completion-length", "8", "--limit", "4"])
    assert got.first.code == 1, got.first.stderr
    assert error_line(got.first, out) == (f"error: {out}: no space left on device; free some space or pick another "
                                          "--out, then rerun")
    assert got.first.listing == []  # no checkpoint to resume from: the work folder went too
    assert fingerprint(dataset, tiny_model_dir) == before


def test_merge_on_a_full_disk(tmp_path, sft_adapter, tiny_model_dir):
    out = tmp_path / "mnt" / "merged"
    before = fingerprint(sft_adapter, tiny_model_dir)
    got = on_tmpfs(tmp_path, "size=512k", ["merge", "--adapter", str(sft_adapter), "--out", str(out)])
    assert got.first.code == 1, got.first.stderr
    assert "no space left on device" in error_line(got.first, out)
    assert got.first.listing == []
    assert fingerprint(sft_adapter, tiny_model_dir) == before


def test_eval_on_a_full_disk_keeps_its_results_for_a_rerun(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "mnt" / "ev"
    before = fingerprint(dataset, tiny_model_dir)
    # The one shard (~20 KB) fits in 64 KiB, the results folder with its charts (~55 KB) does not.
    got = on_tmpfs(tmp_path, "size=64k", ["eval", "-d", str(dataset), "-m", str(tiny_model_dir), "--out", str(out),
                                          "--limit", "4", "--max-new-tokens", "8"])
    assert got.first.code == 1, got.first.stderr
    line = error_line(got.first, out)
    assert line.startswith(f"error: {out}: no space left on device") and f"{out}.parts" in line
    assert "ev" not in got.first.listing
    no_temporaries(got.first.listing)
    assert complete_parts(got.first.listing, got.kept, "ev.parts")
    assert fingerprint(dataset, tiny_model_dir) == before


def test_file_size_limit_is_a_one_line_error(tmp_path, dataset):
    """EFBIG, from the process's file size limit (Python ignores SIGXFSZ, so the write fails instead)."""
    out = tmp_path / "d.parquet"
    cli = shlex.join([sys.executable, "-m", "rftcli", "prepare-data", "--input", str(dataset), "--out", str(out)])
    done = subprocess.run(["sh", "-c", f"ulimit -f 8 && exec {cli}"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})
    run = Run(done.returncode, done.stdout, done.stderr, [])
    assert run.code == 1, run.stderr
    assert error_line(run, out).startswith(f"error: {out}: file too large")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---------------------------------------------------------------- what errors_as_messages recognises

@pytest.mark.parametrize("raised, expected", [
    (OSError(errno.ENOSPC, "No space left on device"), ("{out}: no space left on device", 1)),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), ("{out}: disk quota exceeded", 1)),
    # pyarrow: the errno only in the text; safetensors: a Rust I/O error in its own exception type.
    (OSError("IOError: Error writing bytes to file. Detail: [errno 28] No space left on device"),
     ("{out}: no space left on device", 1)),
    (RuntimeError("Error while serializing: I/O error: Disk quota exceeded (os error 122)"),
     ("{out}: disk quota exceeded", 1)),
    (OSError(errno.EROFS, "Read-only file system", "/ro/x.parquet"),
     ("/ro/x.parquet: cannot write here (read-only file system)", 2)),
    (PermissionError(errno.EACCES, "Permission denied", "/data/in.parquet"), ("/data/in.parquet: permission denied", 2)),
    # An input error quoting an OS error keeps its own message (it says which row).
    (ValueError("in.jsonl: line 3, column 'images': [Errno 28] No space left on device"), None),
    (RuntimeError("a bug"), None),
])
def test_write_failures_are_recognised_in_wrapped_exceptions(raised, expected, tmp_path):
    from rftcli.atomic import check_output, checked_outputs
    from rftcli.errors import write_failure

    out = tmp_path / "out.parquet"
    since = len(checked_outputs())
    check_output(out, overwrite=False)  # the stage's output, named when the error itself names no file
    got = write_failure(raised, since)
    if expected is None:
        assert got is None
    else:
        message, code = got
        assert message.startswith(expected[0].format(out=out)) and code == expected[1], message


def test_failure_inside_an_atomic_output_names_the_output(tmp_path):
    from rftcli.atomic import atomic_output, output_of

    target = tmp_path / "model"
    with pytest.raises(OSError) as err, atomic_output(target, directory=True) as tmp:
        with atomic_output(tmp / "results.parquet") as inner:
            inner.write_text("x")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert output_of(err.value) == target  # the outermost output, not the temporary folder inside it
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_table_writer_removes_its_temporary_file_when_close_fails(tmp_path, dataset):
    """In-process (a library caller, a test): the rows fit in pyarrow's buffer and the disk fills at close()."""
    out = tmp_path / "mnt" / "d.parquet"
    code = f"""
import gc, os, sys
from pathlib import Path
from rftcli.atomic import output_of
from rftcli.stages import prepare_data
gc.disable()  # what is left must not depend on when the collector runs
try:
    prepare_data.run(prepare_data.Config(out=Path({str(out)!r}), input=Path({str(dataset)!r})))
except OSError as err:
    print("caught", err.errno, output_of(err))
print("left", sorted(os.listdir({str(out.parent)!r})))
"""
    out.parent.mkdir()
    script = f"mount -t tmpfs -o size=8k tmpfs {out.parent} && exec {shlex.join([sys.executable, '-c', code])}"
    done = subprocess.run(["unshare", "-Urm", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert f"caught {errno.ENOSPC} {out}" in done.stdout
    assert "left []" in done.stdout, done.stdout
