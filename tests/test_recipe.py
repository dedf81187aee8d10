"""The tiny recipe end to end through real `make` and the installed `rftcli` command, on the tiny model
with shortened settings: every artifact is written, and Make re-runs only stale stages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rftcli.manifest import read_checkpoint_manifest
from rftcli.schema import read_table

ROOT = Path(__file__).resolve().parent.parent
SHORT = {
    "data.yaml": {"num": 40, "test_fraction": 0.25},
    "sft.yaml": {"max_steps": 3, "batch_size": 4, "logging_steps": 1},
    "rollout.yaml": {"limit": 4, "num_generations": 2, "max_new_tokens": 6},
    "grpo.yaml": {"max_steps": 2, "batch_size": 4, "num_generations": 2, "max_completion_length": 6, "limit": 8},
    "eval.yaml": {"max_new_tokens": 6},
}


def _make(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["make", "-C", str(recipe), "MODEL=builtin:tiny-qwen2.5-vl", *args], env=env,
                          capture_output=True, text=True, timeout=900)


def shortened_copy(tmp_path: Path, name: str, short: dict[str, dict]) -> Path:
    """recipes/NAME copied under tmp_path with each YAML file of `short` updated by its settings."""
    recipe = tmp_path / name
    shutil.copytree(ROOT / "recipes" / name, recipe)
    for file, changes in short.items():
        settings = yaml.safe_load((recipe / file).read_text())
        settings.update(changes)
        (recipe / file).write_text(yaml.safe_dump(settings))
    return recipe


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_tiny_recipe_runs_and_reruns_only_stale_stages(tmp_path):
    recipe = shortened_copy(tmp_path, "tiny", SHORT)

    run = _make(recipe)
    assert run.returncode == 0, run.stdout + run.stderr
    out = recipe / "out"
    for kind, path in [("dataset", "data.parquet"), ("rollouts", "rollouts.parquet"), ("scores", "scores.parquet"),
                       ("eval", "eval/results.parquet")]:
        assert read_table(out / path, kind).table.num_rows > 0
    assert read_checkpoint_manifest(out / "sft")["kind"] == "full"
    assert read_checkpoint_manifest(out / "grpo")["base_model"] == "out/sft"
    assert read_checkpoint_manifest(out / "merged")["merged_from"]["adapter"] == "out/grpo"
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert list(summary["models"]) == ["base", "sft", "grpo"]
    assert "grpo" in run.stdout and "accuracy" in run.stdout

    again = _make(recipe, "-n")
    assert "rftcli" not in again.stdout, again.stdout  # nothing is stale

    (recipe / "grpo.yaml").touch()
    stale = _make(recipe, "-n").stdout
    for stage in ("train-grpo", "merge", "eval"):
        assert f"rftcli {stage}" in stale
    for stage in ("prepare-data", "sft-coldstart", "rollout", "score"):
        assert f"rftcli {stage}" not in stale


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_tiny_ab_target_runs_both_arms_on_every_set_and_prompt(tmp_path):
    from rftcli.contamination import table_hashes

    recipe = shortened_copy(tmp_path, "tiny", SHORT)

    run = _make(recipe, "ab", "AB_SEEDS=0", "AB_OOD_ROWS=8")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ab = recipe / "out" / "ab"
    weak, true = (read_table(ab / f"data-{arm}.parquet", "dataset").table for arm in ("weak", "true"))
    # The arms differ only in the SFT targets: same ids, splits, prompts, images and answers.
    for column in ("id", "split", "prompt", "images", "answer"):
        assert weak[column].to_pylist() == true[column].to_pylist(), column
    trained = set(table_hashes(weak))
    for name in ("more-distractors", "larger-images", "crowded"):
        ood = read_table(ab / f"ood-{name}.parquet", "dataset").table
        assert ood.num_rows == 8 and not trained & set(table_hashes(ood))
    for arm in ("weak", "true"):
        assert read_checkpoint_manifest(ab / f"seed0/{arm}/sft")["inputs"]["dataset"]["path"] == f"out/ab/data-{arm}.parquet"
        assert read_checkpoint_manifest(ab / f"seed0/{arm}/grpo")["base_model"] == f"out/ab/seed0/{arm}/sft"
    grid = json.loads((ab / "seed0" / "eval" / "summary.json").read_text())["grid"]
    cells = {(c["model"], c["set"], c["prompt"]) for c in grid}
    assert len(cells) == 4 * 4 * 2 and ("grpo-true", "crowded", "direct") in cells
    table = (ab / "ab.md").read_text()
    assert "| grpo-weak |" in table and "| true |" in table and "crowded, direct" in table
    assert len((ab / "ab.csv").read_text().splitlines()) == 1 + 4 * 4 * 2
