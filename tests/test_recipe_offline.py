"""recipes/tiny-offline end to end through real `make` and the installed `rftcli` command, on the tiny model
with two short rounds: every round's artifacts, each round starting from the previous round's policy, equal
sampling budgets in both loops, the per-round table read back against the files it summarises, and Make
re-running only what a changed setting makes stale."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rftcli.manifest import read_checkpoint_manifest
from rftcli.schema import read_table
from tests.test_recipe import shortened_copy

ROOT = Path(__file__).resolve().parent.parent
SHORT = {
    "data.yaml": {"num": 40, "test_fraction": 0.25},
    "sft.yaml": {"max_steps": 3, "batch_size": 4},
    "rollout.yaml": {"max_new_tokens": 6},
    "online.yaml": {"max_completion_length": 6},
    "eval.yaml": {"max_new_tokens": 6},
}
BUDGET = ["ROUNDS=2", "PROMPTS=4", "GENERATIONS=2", "BATCH=4"]


def _make(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["make", "-C", str(recipe), "MODEL=builtin:tiny-qwen2.5-vl", *BUDGET, *args], env=env,
                          capture_output=True, text=True, timeout=1800)


def _accuracy(folder: Path) -> float:
    (summary,) = json.loads((folder / "summary.json").read_text())["models"].values()
    return summary["accuracy"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_offline_rounds_recipe(tmp_path):
    recipe = shortened_copy(tmp_path, "tiny-offline", SHORT)

    run = _make(recipe)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = recipe / "out"
    for r, start in ((1, {"offline": "out/sft", "online": "out/sft"}),
                     (2, {"offline": "out/round1/offline/policy", "online": "out/round1/online/policy"})):
        prompts = read_table(out / f"round{r}/prompts.parquet", "dataset").table
        assert prompts.num_rows == 4
        rollouts = read_table(out / f"round{r}/offline/rollouts.parquet", "rollouts").table
        assert rollouts.num_rows == 8 and set(rollouts["policy"].to_pylist()) == {start["offline"]}
        assert read_table(out / f"round{r}/offline/scores.parquet", "scores").table.num_rows == 8
        for mode in ("offline", "online"):
            trained = read_checkpoint_manifest(out / f"round{r}/{mode}/grpo")
            assert (trained["mode"], trained["base_model"]) == (mode, start[mode])
            merged = read_checkpoint_manifest(out / f"round{r}/{mode}/policy")
            assert merged["merged_from"]["adapter"] == f"out/round{r}/{mode}/grpo"
        online = read_checkpoint_manifest(out / f"round{r}/online/grpo")
        assert online["inputs"]["dataset"]["path"] == f"out/round{r}/prompts.parquet"
        assert online["config"]["max_steps"] == 2 and online["config"]["num_generations"] == 2
        for mode in ("offline", "online"):  # round prompts are drawn with --exclude data.parquet
            (summary,) = json.loads((out / f"round{r}/{mode}/eval/summary.json").read_text())["models"].values()
            assert summary["contamination"]["recorded"] and summary["contamination"]["trained_rows"] == 0
    # Each round draws new prompts (ids carry the draw's seed) and images.
    first, second = (read_table(out / f"round{r}/prompts.parquet", "dataset").table for r in (1, 2))
    assert not set(first["id"].to_pylist()) & set(second["id"].to_pylist())
    assert first["images"].to_pylist() != second["images"].to_pylist()

    with open(out / "rounds.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [row["round"] for row in table] == ["0", "1", "2"]
    assert [(row["offline_completions"], row["online_completions"]) for row in table] == \
        [("0", "0"), ("8", "8"), ("16", "16")]
    assert float(table[0]["offline_accuracy"]) == _accuracy(out / "round0/eval")
    for r in (1, 2):
        for mode in ("offline", "online"):
            assert float(table[r][f"{mode}_accuracy"]) == _accuracy(out / f"round{r}/{mode}/eval")
        scores = read_table(out / f"round{r}/offline/scores.parquet", "scores").table["reward"].to_pylist()
        assert float(table[r]["offline_reward"]) == pytest.approx(sum(scores) / len(scores))
        logged = [json.loads(line) for line in (out / f"round{r}/online/grpo/metrics.jsonl").read_text().splitlines()]
        rewards = [e["reward"] for e in logged if "reward" in e]
        assert len(rewards) == 2 and float(table[r]["online_reward"]) == pytest.approx(sum(rewards) / 2)
    assert "| round | offline completions |" in run.stdout  # the table is printed at the end

    assert "rftcli" not in _make(recipe, "-n").stdout  # nothing is stale

    (recipe / "offline.yaml").touch()
    stale = _make(recipe, "-n").stdout
    for target in ("--out out/round1/offline/grpo", "--out out/round2/offline/rollouts.parquet", "rounds_table.py"):
        assert target in stale
    for target in ("--out out/sft", "--out out/round1/online/grpo", "--out out/round2/online/grpo",
                   "--out out/round1/offline/scores.parquet"):
        assert target not in stale
