"""The command line: help, exit codes, one-line errors, config layering, recipes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rftcli.cli import app
from rftcli.config import build_config

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["prepare-data", "sft-coldstart", "rollout", "score", "train-grpo", "merge", "eval"]
MODULES = {"prepare-data": "prepare_data", "sft-coldstart": "sft_coldstart", "rollout": "rollout", "score": "score",
           "train-grpo": "train_grpo", "merge": "merge", "eval": "eval"}
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_every_stage_is_a_command():
    names = {c.name for c in app.registered_commands}
    assert set(COMMANDS) <= names


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example_and_the_readme_mentions_it(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example: rftcli " + command in " ".join(result.output.split())
    assert f"rftcli {command}" in (ROOT / "README.md").read_text()


def test_missing_required_settings_exit_2_with_one_line():
    result = invoke("rollout", "--out", "x.parquet")
    assert result.exit_code == 2
    assert "missing --dataset, --model" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_wrong_schema_input_fails_cleanly(tmp_path, dataset):
    out = tmp_path / "s.parquet"
    result = invoke("score", "--rollouts", str(dataset), "--out", str(out))
    assert result.exit_code == 2
    assert re.search(r"error: .*counting.parquet: is a dataset table, expected rollouts or scores", result.output)
    assert not out.exists()


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "d.parquet"
    assert invoke("prepare-data", "--task", "counting", "--num", "5", "--out", str(out)).exit_code == 0
    before = out.read_bytes()
    result = invoke("prepare-data", "--task", "counting", "--num", "6", "--out", str(out))
    assert result.exit_code == 2 and "pass --overwrite" in result.output
    assert out.read_bytes() == before
    assert invoke("prepare-data", "--task", "counting", "--num", "6", "--out", str(out), "--overwrite").exit_code == 0


def test_flags_win_over_yaml_and_unknown_keys_are_named(tmp_path):
    from rftcli.stages import prepare_data

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("task: counting\nnum: 7\nseed: 3\n")
    out = tmp_path / "d.parquet"
    result = invoke("prepare-data", "--config", str(cfg_file), "--num", "4", "--out", str(out))
    assert result.exit_code == 0, result.output
    from rftcli.schema import read_table

    manifest = read_table(out, "dataset").manifest
    assert manifest["config"]["num"] == 4 and manifest["config"]["seed"] == 3
    cfg_file.write_text("task: counting\nnumm: 7\n")
    result = invoke("prepare-data", "--config", str(cfg_file), "--out", str(tmp_path / "e.parquet"))
    assert result.exit_code == 2 and "c.yaml: unknown setting 'numm'" in result.output
    assert build_config(prepare_data.Config, None, {"out": "x", "task": "counting"}).out == Path("x")


def test_bad_reward_name_is_a_clean_error(tmp_path, rollouts):
    result = invoke("score", "--rollouts", str(rollouts), "--out", str(tmp_path / "s.parquet"), "-r", "nope")
    assert result.exit_code == 2 and "unknown reward 'nope'" in result.output


def test_internal_errors_are_one_line_exit_1_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    from rftcli.stages import prepare_data

    def boom(config):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(prepare_data, "run", boom)
    result = invoke("prepare-data", "--task", "counting", "--out", str(tmp_path / "d.parquet"))
    assert result.exit_code == 1
    assert "internal error (RuntimeError): disk on fire" in result.output and "Traceback" not in result.output
    result = invoke("--debug", "prepare-data", "--task", "counting", "--out", str(tmp_path / "d.parquet"))
    assert isinstance(result.exception, RuntimeError)


def test_version():
    from rftcli import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("yaml_file", sorted(p for p in (ROOT / "recipes").glob("*/*.yaml")
                                             if p.parent.name != "accelerate"),  # launcher configs: test_train_grpo
                         ids=lambda p: p.name)
def test_every_recipe_yaml_loads_into_its_stage_config(yaml_file):
    from importlib import import_module

    stage = {"data": "prepare_data", "prompts": "prepare_data", "sft": "sft_coldstart", "rollout": "rollout",
             "score": "score", "grpo": "train_grpo", "online": "train_grpo", "offline": "train_grpo",
             "eval": "eval", "test": "prepare_data", "eval-data": "prepare_data", "merge": "merge"}[yaml_file.stem]
    cls = import_module(f"rftcli.stages.{stage}").Config
    required = {"prepare_data": {"out": "x"}, "sft_coldstart": {"dataset": "d", "model": "m", "out": "o"},
                "rollout": {"dataset": "d", "model": "m", "out": "o"},
                "train_grpo": {"dataset": "d", "model": "m", "out": "o"},
                "score": {"rollouts": "r", "out": "o"},
                "eval": {"dataset": "d", "models": ("m",), "out": "o"}, "merge": {"adapter": "a", "out": "o"}}[stage]
    if stage == "prepare_data" and "task" not in yaml.safe_load(yaml_file.read_text()):
        required = {**required, "input": "i"}  # the recipe gives its data (DATA=) on the command line
    if yaml_file.stem == "offline":
        required = {"rollouts": "r", "model": "m", "out": "o"}
    build_config(cls, yaml_file, required)
