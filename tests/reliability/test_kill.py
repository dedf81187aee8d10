"""SIGKILL every long stage at named points, rerun the same command, and compare with a run never killed.

Each case starts `rftcli STAGE ...` in a child process that kills itself with SIGKILL at a chosen call
(`killpoint.py`): while a piece of work (a shard, a checkpoint) is being written, just before a piece is
renamed into place, while the final output is written, just before it is renamed, or at a random
moment. Then:
- the child died of SIGKILL, and nothing stands under the final output name (no half-written file can
  be mistaken for a finished one);
- the same command again (plus `--resume` for the training stages, the documented interface) exits 0;
- its output equals the output of an uninterrupted run: the same table, the same adapter tensors, the
  same logged losses;
- the output's folder then holds the output alone: no work folder and no temporary leftovers.

Float sums depend on the thread count, so the child runs with this process's (`OMP_NUM_THREADS`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rftcli.cli import app

KILLPOINT = Path(__file__).with_name("killpoint.py")
runner = CliRunner()

# Where to kill, per stage: (case name, killpoint arguments). OUT is the output's file or folder name.
TABLE_POINTS = [
    ("writing a shard", ["--at", "pyarrow.parquet:ParquetWriter.__init__", "--nth", "2", "--after"]),
    ("renaming a shard", ["--at", "os:replace", "--match", ".part-", "--nth", "2"]),
    ("writing the output", ["--at", "pyarrow.parquet:ParquetWriter.__init__", "--match", "/.OUT.tmp-", "--after"]),
    ("renaming the output", ["--at", "os:replace", "--dst", "/OUT"]),
]
CHECKPOINT_POINTS = [
    ("writing the first checkpoint", ["--at", "torch:save", "--match", "checkpoint-2"]),
    ("writing the second checkpoint", ["--at", "torch:save", "--match", "checkpoint-4", "--nth", "2"]),
    ("writing the output", ["--at", "builtins:open", "--match", "/.OUT.tmp-", "--after"]),
    ("renaming the output", ["--at", "os:replace", "--dst", "/OUT"]),
]
# Random moments: seeded, so a failure can be rerun; spread over model loading, work and writing.
# A seeded moment after imports and model loading, while work is done or written (a child that finished
# first is checked as finished). The named points above cover the moments that matter most.
RANDOM_DELAYS = [round(random.Random(1).uniform(2.5, 3.8), 2)]


def _child(args: list[str], point: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.run([sys.executable, str(KILLPOINT), *point, "--", *args], env=env, capture_output=True,
                          text=True, timeout=600)


def _run(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def kill_and_rerun(args: list[str], out: Path, point: list[str], rerun_extra: list[str] = (),
                   random_moment: bool = False) -> None:
    """Kill `rftcli ARGS` at `point`, check nothing is under `out`, rerun until it exits 0."""
    point = [p.replace("OUT", out.name) for p in point]
    child = _child(args, point)
    print(f"{args[0]} killed at {' '.join(point)}: child exit {child.returncode}")  # shown with pytest -s
    if random_moment and child.returncode == 0:  # finished before the moment came: nothing to recover
        assert out.exists()
    else:
        assert child.returncode == -signal.SIGKILL, f"{point}: rc {child.returncode}\n{child.stderr[-3000:]}"
        assert not out.exists(), f"{out} exists after a kill at {point}"
        _run([*args, *rerun_extra])
    leftovers = sorted(p.name for p in out.parent.iterdir() if p.name != out.name)
    assert leftovers == [], f"left beside {out.name} after the rerun: {leftovers}"


def _points(points, delays=RANDOM_DELAYS):
    return [pytest.param(point, id=name.replace(" ", "-")) for name, point in points] + [
        pytest.param(["--at", f"sleep:{d}"], id=f"random-{d}s") for d in delays]


# ---------------------------------------------------------------- rollout

@pytest.fixture(scope="module")
def rollout_args(dataset, tiny_model_dir):
    def args(out: Path) -> list[str]:
        return ["rollout", "-d", str(dataset), "-m", str(tiny_model_dir), "--out", str(out), "-n", "2",
                "--max-new-tokens", "8", "--batch-size", "2", "--split", "all", "--limit", "12", "--seed", "5"]
    return args


@pytest.fixture(scope="module")
def rollout_reference(rollout_args, tmp_path_factory):
    out = tmp_path_factory.mktemp("kill_ref") / "rollouts.parquet"
    _run(rollout_args(out))
    return pq.read_table(out)


@pytest.mark.parametrize("point", _points(TABLE_POINTS))
def test_rollout_killed_then_rerun_equals_an_uninterrupted_run(point, rollout_args, rollout_reference, tmp_path):
    out = tmp_path / "out" / "rollouts.parquet"
    out.parent.mkdir()
    kill_and_rerun(rollout_args(out), out, point, random_moment=point[1].startswith("sleep:"))
    assert pq.read_table(out).equals(rollout_reference)


# ---------------------------------------------------------------- score

SLOW_REWARD = """
import time

def slow_length(completions, **kw):
    time.sleep(0.004 * len(completions))  # 4 ms a row: about 3 s for the table, so shards are written
    return [len(c) / 10 for c in completions]
"""
SCORE_POINTS = [
    ("writing a shard", ["--at", "pyarrow.parquet:ParquetWriter.__init__", "--match", ".part-", "--after"]),
    ("renaming a shard", ["--at", "os:replace", "--match", ".part-"]),
    *TABLE_POINTS[2:],
]


@pytest.fixture(scope="module")
def score_args(rollouts, tmp_path_factory):
    import pyarrow as pa

    from rftcli.schema import read_table, write_table

    folder = tmp_path_factory.mktemp("kill_score")
    art = read_table(rollouts, "rollouts")
    big = pa.concat_tables([art.table] * 40)  # 720 rows: three chunks of 256
    big = big.set_column(big.column_names.index("group_index"), "group_index",
                         pa.array([i // 3 for i in range(big.num_rows)], pa.int64()))
    write_table(folder / "rollouts.parquet", "rollouts", big, art.manifest)
    (folder / "slow.py").write_text(SLOW_REWARD)

    def args(out: Path) -> list[str]:
        return ["score", "--rollouts", str(folder / "rollouts.parquet"), "-r", f"{folder / 'slow.py'}:slow_length",
                "-r", "format=0.2", "--workers", "1", "--out", str(out)]
    return args


@pytest.fixture(scope="module")
def score_reference(score_args, tmp_path_factory):
    out = tmp_path_factory.mktemp("kill_ref") / "scores.parquet"
    _run(score_args(out))
    return pq.read_table(out), pq.read_metadata(out).metadata[b"rftcli.manifest"]


@pytest.mark.parametrize("point", _points(SCORE_POINTS))
def test_score_killed_then_rerun_equals_an_uninterrupted_run(point, score_args, score_reference, tmp_path):
    out = tmp_path / "out" / "scores.parquet"
    out.parent.mkdir()
    kill_and_rerun(score_args(out), out, point, random_moment=point[1].startswith("sleep:"))
    assert pq.read_table(out).equals(score_reference[0])
    summary = json.loads(pq.read_metadata(out).metadata[b"rftcli.manifest"])["summary"]
    assert summary == json.loads(score_reference[1])["summary"]


# ---------------------------------------------------------------- eval

@pytest.fixture(scope="module")
def eval_args(dataset, tiny_model_dir):
    def args(out: Path) -> list[str]:
        return ["eval", "-d", str(dataset), "-m", str(tiny_model_dir), "--out", str(out), "--split", "all",
                "--limit", "12", "--max-new-tokens", "8", "--batch-size", "2"]
    return args


def _eval_outcome(folder: Path):
    return pq.read_table(folder / "results.parquet"), json.loads((folder / "flips.json").read_text())


@pytest.fixture(scope="module")
def eval_reference(eval_args, tmp_path_factory):
    out = tmp_path_factory.mktemp("kill_ref") / "eval"
    _run(eval_args(out))
    return _eval_outcome(out)


@pytest.mark.parametrize("point", _points(TABLE_POINTS))
def test_eval_killed_then_rerun_equals_an_uninterrupted_run(point, eval_args, eval_reference, tmp_path):
    out = tmp_path / "out" / "eval"
    out.parent.mkdir()
    kill_and_rerun(eval_args(out), out, point, random_moment=point[1].startswith("sleep:"))
    table, flips = _eval_outcome(out)
    assert table.equals(eval_reference[0]) and flips == eval_reference[1]


# ---------------------------------------------------------------- sft-coldstart and train-grpo

def _adapter_and_losses(folder: Path):
    tensors = load_file(folder / "adapter_model.safetensors")
    logged = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return tensors, [(e["step"], e["loss"]) for e in logged if "loss" in e]


def _same_training(a, b) -> None:
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert a[1] == b[1] and len(a[1]) == 6


@pytest.fixture(scope="module")
def scores_table(rollouts, tmp_path_factory):
    out = tmp_path_factory.mktemp("kill_scores") / "scores.parquet"
    _run(["score", "--rollouts", str(rollouts), "-r", "accuracy", "-r", "format=0.2", "--out", str(out),
          "--workers", "1"])
    return out


TRAINING = {  # 6 steps, a checkpoint every 2
    "sft": lambda f: ["sft-coldstart", "-d", str(f["dataset"]), "-m", "builtin:tiny-qwen2.5-vl", "--batch-size", "4",
                      "--seed", "3"],
    "grpo": lambda f: ["train-grpo", "--rollouts", str(f["scores_table"]), "-m", str(f["tiny_model_dir"]),
                       "--batch-size", "6", "--seed", "4"],
}
TRAINING_FLAGS = ["--max-steps", "6", "--lr", "0.01", "--save-steps", "2", "--logging-steps", "1"]


@pytest.fixture(scope="module")
def training_runs(dataset, scores_table, tiny_model_dir, tmp_path_factory):
    """Per stage: its arguments for an output, the adapter and losses of an uninterrupted run, and its folder."""
    fixtures = {"dataset": dataset, "scores_table": scores_table, "tiny_model_dir": tiny_model_dir}
    runs = {}
    for stage, base in TRAINING.items():
        def args(out: Path, base=base) -> list[str]:
            return [*base(fixtures), *TRAINING_FLAGS, "--out", str(out)]
        reference = tmp_path_factory.mktemp("kill_ref") / stage
        _run(args(reference))
        runs[stage] = (args, _adapter_and_losses(reference), reference)
    return runs


@pytest.mark.parametrize("point", _points(CHECKPOINT_POINTS))
@pytest.mark.parametrize("stage", sorted(TRAINING))
def test_training_killed_then_resumed_equals_an_uninterrupted_run(stage, point, training_runs, tmp_path):
    args, reference, _ = training_runs[stage]
    out = tmp_path / "out" / stage
    out.parent.mkdir()
    kill_and_rerun(args(out), out, point, ["--resume"], random_moment=point[1].startswith("sleep:"))
    _same_training(_adapter_and_losses(out), reference)


MEASURED = {"step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second"}


def _comparable(folder: Path, name: str) -> object:
    """A file of a finished training output as it must equal the uninterrupted run's: its bytes, except what
    records the run itself: in the manifest, when it was made, its output path, --resume and the step it
    resumed from; in metrics.jsonl, what is measured (times, memory) and the end-of-run line of timings (a run
    resumed from its final checkpoint trains no step and logs none)."""
    text = (folder / name).read_bytes()
    if name == "rftcli_manifest.json":
        manifest = json.loads(text.decode().replace(str(folder), "OUT"))
        for key in ("created_at", "resumed_from_step"):
            manifest.pop(key, None)
        manifest["config"].pop("resume")
        return manifest
    if name == "metrics.jsonl":
        return [{k: v for k, v in entry.items() if k not in MEASURED and not k.startswith("memory/")}
                for entry in map(json.loads, text.decode().splitlines()) if "train_runtime" not in entry]
    return text


def _same_files(out: Path, reference: Path) -> None:
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(reference)) for p in reference.rglob("*") if p.is_file())
    assert "tokenizer.json" in names and "adapter_model.safetensors" in names
    for name in names:
        assert _comparable(out, name) == _comparable(reference, name), f"{name} differs from the uninterrupted run's"


ONLINE = ["train-grpo", "-m", "builtin:tiny-qwen2.5-vl", "--batch-size", "4", "--num-generations", "2",
          "--max-completion-length", "8", "--seed", "4", "--max-steps", "2", "--lr", "0.01", "--save-steps", "2",
          "--logging-steps", "1"]


@pytest.mark.parametrize("stage", ["sft", "grpo", "grpo-online"])
def test_training_killed_while_its_output_is_written_resumes_to_the_same_files(stage, dataset, request, tmp_path):
    """A kill while the output's temporary folder is written, then --resume (from the final checkpoint: no step
    left to train): every file equals the uninterrupted run's, tokenizer.json included (it kept the padding of
    the last batch encoded, which the resumed run never encoded)."""
    if stage == "grpo-online":
        def args(out: Path) -> list[str]:
            return [*ONLINE, "-d", str(dataset), "--out", str(out)]
        reference = tmp_path / "ref" / stage
        _run(args(reference))
    else:
        args, _, reference = request.getfixturevalue("training_runs")[stage]
    out = tmp_path / "out" / stage
    out.parent.mkdir()
    kill_and_rerun(args(out), out, CHECKPOINT_POINTS[2][1], ["--resume"])
    _same_files(out, reference)



# ---------------------------------------------------------------- killed just after the output was renamed

def _killed_after_rename(args: list[str], out: Path) -> str:
    """Kill `rftcli ARGS` right after its output is renamed into place, before its work folder is removed;
    return the work folder left behind."""
    point = ["--at", "os:replace", "--dst", f"/{out.name}", "--after"]
    child = _child(args, point)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    assert out.exists()
    left = sorted(p.name for p in out.parent.iterdir() if p.name != out.name)
    return left[0] if left else ""


@pytest.mark.parametrize("stage", ["rollout", "sft", "grpo"])
def test_a_work_folder_left_by_a_kill_after_the_rename_goes_with_the_next_run(stage, rollout_args, training_runs,
                                                                              tmp_path):
    """The output stands and is complete; the rerun refuses to overwrite it (exit 2) and removes the work
    folder the killed run had not removed yet (shards, or checkpoints with their optimizer state)."""
    out = tmp_path / "out" / ("rollouts.parquet" if stage == "rollout" else stage)
    out.parent.mkdir()
    args = rollout_args(out) if stage == "rollout" else training_runs[stage][0](out)
    left = _killed_after_rename(args, out)
    assert left == out.name + (".parts" if stage == "rollout" else ".work")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "already exists" in " ".join(result.output.split()), result.output
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_a_work_folder_newer_than_the_output_is_left_alone(tmp_path):
    """Checkpoints written after the output (a run with --overwrite going on now) are not a finished run's."""
    import time

    from rftcli.atomic import OutputExistsError, check_output

    out = tmp_path / "grpo"
    out.mkdir()
    time.sleep(0.05)
    (tmp_path / "grpo.work" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(OutputExistsError):
        check_output(out, overwrite=False)
    assert (tmp_path / "grpo.work" / "checkpoint-2").is_dir()


def test_removing_a_work_folder_renames_it_aside_first(tmp_path):
    """A kill while checkpoints are deleted must not leave one that lost its optimizer state but kept the
    trainer_state.json that marks it complete: the folder leaves its name in one rename."""
    from rftcli.atomic import remove_stale_temporaries
    from rftcli.training import discard, latest_checkpoint

    work = tmp_path / "sft.work"
    ckpt = work / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (ckpt / "optimizer.pt").write_bytes(b"x")
    seen = []
    real = os.replace

    def replace_then_die(src, dst):  # the rename happens, the delete after it never does
        real(src, dst)
        seen.append(Path(dst).name)
        raise KeyboardInterrupt

    import rftcli.atomic as atomic

    atomic.os.replace = replace_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            discard(work)
    finally:
        atomic.os.replace = real
    assert not work.exists() and latest_checkpoint(work) is None
    assert seen and seen[0].startswith(".sft.old-")
    assert [p.name for p in remove_stale_temporaries(tmp_path / "sft")] == seen

# ---------------------------------------------------------------- prepare-data and merge: short stages, rerun whole

FINAL_POINTS = [TABLE_POINTS[2], TABLE_POINTS[3]]


# prepare-data needs no torch and runs about a second here: earlier moments.
@pytest.mark.parametrize("point", _points(FINAL_POINTS, [round(random.Random(2).uniform(0.4, 0.8), 2)]))
def test_prepare_data_killed_then_rerun_equals_an_uninterrupted_run(point, tmp_path):
    def args(out: Path) -> list[str]:
        return ["prepare-data", "--task", "counting", "--num", "3000", "--out", str(out)]

    reference = tmp_path / "ref" / "data.parquet"
    _run(args(reference))
    out = tmp_path / "out" / "data.parquet"
    out.parent.mkdir()
    kill_and_rerun(args(out), out, point, random_moment=point[1].startswith("sleep:"))
    assert pq.read_table(out).equals(pq.read_table(reference))


@pytest.mark.parametrize("point", [pytest.param(p, id=n.replace(" ", "-")) for n, p in [
    ("writing the output", ["--at", "builtins:open", "--match", "/.OUT.tmp-", "--after"]),
    ("renaming the output", ["--at", "os:replace", "--dst", "/OUT"])]])
def test_merge_killed_then_rerun_equals_an_uninterrupted_run(point, sft_adapter, tmp_path):
    def args(out: Path) -> list[str]:
        return ["merge", "--adapter", str(sft_adapter), "--out", str(out)]

    reference = tmp_path / "ref" / "merged"
    _run(args(reference))
    out = tmp_path / "out" / "merged"
    out.parent.mkdir()
    kill_and_rerun(args(out), out, point)
    a, b = load_file(out / "model.safetensors"), load_file(reference / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
