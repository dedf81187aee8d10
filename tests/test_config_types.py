"""`--config` YAML values are checked against each setting's type before a stage runs: a wrong type, a bad
range, an unreadable file or a YAML alias bomb is one `error:` line naming the file (and the setting), exit
2, and nothing written."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rftcli.cli import app
from rftcli.config import build_config

from .conftest import TINY

runner = CliRunner()


def _refused(tmp_path: Path, args: list[str], *expected: str, name: str = "c.yaml"):
    """Run the command; it must exit 2 with one `error:` line holding `expected`, and write nothing."""
    before = sorted(tmp_path.rglob("*"))
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for text in (name, *expected):
        assert text in lines[0], result.output
    assert sorted(tmp_path.rglob("*")) == before, "something was written"
    return lines[0]


def _stage_args(command: str, tmp_path: Path, dataset: Path) -> list[str]:
    out = tmp_path / "out"
    return {
        "rollout": ["rollout", "-d", str(dataset), "-m", TINY, "--out", str(out / "r.parquet")],
        "score": ["score", "--rollouts", str(dataset), "--out", str(out / "s.parquet")],
        "prepare-data": ["prepare-data", "--task", "counting", "--num", "8", "--out", str(out / "d.parquet")],
        "eval": ["eval", "-d", str(dataset), "-m", TINY, "--out", str(out / "eval")],
    }[command]


# The audit's cases: each crashed as an internal error (exit 1), was silently used, or gave a misleading
# message naming neither the file nor the setting.
CASES = [
    ("rollout", "limit: lots\n", ["'limit'", "expected a whole number", "'lots' (str)"]),
    ("rollout", "limit: {a: 1}\n", ["'limit'", "expected a whole number", "mapping"]),
    ("rollout", "limit: 2.5\n", ["'limit'", "expected a whole number", "2.5 (float)"]),
    ("prepare-data", "limit: true\n", ["'limit'", "expected a whole number", "true (bool)"]),
    ("rollout", "limit: -5\n", ["limit", "at least 1"]),
    ("rollout", "limit: 0\n", ["limit", "at least 1"]),
    ("eval", "limit: 0\n", ["limit", "at least 1"]),
    ("rollout", "split: 5\n", ["'split'", "expected text", "5 (int)"]),
    ("rollout", "temperature: hot\n", ["'temperature'", "expected a number", "'hot' (str)"]),
    ("rollout", "temperature: true\n", ["'temperature'", "expected a number", "true (bool)"]),
    ("rollout", "temperature: .nan\n", ["'temperature'", "expected a number"]),
    ("score", "timeout: soon\n", ["'timeout'", "expected a number", "'soon' (str)"]),
    ("score", "workers: many\n", ["'workers'", "expected a whole number", "'many' (str)"]),
    ("score", "rewards: {accuracy: 1}\n", ["'rewards'", "mapping"]),
    ("score", "rewards: [accuracy=1, 5]\n", ["'rewards'", "item 2", "5 (int)"]),
    ("rollout", "stop: {a: 1}\n", ["'stop'", "mapping"]),
    ("rollout", "stop: [a, [b]]\n", ["'stop'", "item 2", "list"]),
    ("rollout", "out: 5\n", ["'out'", "expected a path", "5 (int)"]),
    ("rollout", "trust_remote_code: 1\n", ["'trust_remote_code'", "expected true or false", "1 (int)"]),
    ("rollout", "model: null\n", ["'model'", "expected text", "null"]),
    ("rollout", "batch_size: [8]\n", ["'batch_size'", "list"]),
]


@pytest.mark.parametrize(("command", "text", "expected"), CASES, ids=[f"{c}-{t.strip()}" for c, t, _ in CASES])
def test_wrong_yaml_value_is_one_line_exit_2_naming_file_and_key(tmp_path, dataset, command, text, expected):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    args = _stage_args(command, tmp_path, dataset)
    if "model: null" in text or "out: 5" in text:  # the YAML gives the setting, not a flag
        i = args.index("-m" if "model" in text else "--out")
        del args[i:i + 2]
    _refused(tmp_path, [*args, "--config", str(cfg)], *expected)


@pytest.mark.parametrize("stage", ["eval", "rollout", "sft_coldstart", "train_grpo", "prepare_data"])
@pytest.mark.parametrize("limit", [0, -5])
def test_every_stage_refuses_a_limit_below_1(stage, limit):
    from importlib import import_module

    cls = import_module(f"rftcli.stages.{stage}").Config
    required = {"prepare_data": {"out": "x", "task": "counting"},
                "eval": {"dataset": "d", "models": ("m",), "out": "o"}}.get(stage, {"dataset": "d", "model": "m",
                                                                                    "out": "o"})
    with pytest.raises(ValueError, match="limit must be at least 1"):
        build_config(cls, None, {**required, "limit": limit})


def test_config_that_is_a_folder_is_one_line(tmp_path, dataset):
    folder = tmp_path / "c.yaml"
    folder.mkdir()
    _refused(tmp_path, [*_stage_args("rollout", tmp_path, dataset), "--config", str(folder)], "folder")


def test_config_that_is_not_utf8_is_one_line(tmp_path, dataset):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"split: caf\xe9\n")
    _refused(tmp_path, [*_stage_args("rollout", tmp_path, dataset), "--config", str(cfg)], "UTF-8")


def test_config_nested_too_deeply_is_one_line(tmp_path, dataset):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stop: " + "[" * 5000 + "]" * 5000 + "\n")  # past PyYAML's recursion: no key to name
    _refused(tmp_path, [*_stage_args("rollout", tmp_path, dataset), "--config", str(cfg)], "nested too deeply")
    cfg.write_text("stop: " + "[" * 300 + "]" * 300 + "\n")
    _refused(tmp_path, [*_stage_args("rollout", tmp_path, dataset), "--config", str(cfg)], "'stop'", "a list as item 1")


def test_yaml_alias_bomb_is_refused_at_once(tmp_path, dataset):
    """A billion-laughs bomb under a list setting: 9**9 strings if walked. In a child process with a time
    limit, so a regression fails here instead of eating the machine's memory."""
    layers = ["&x0 [a,a,a,a,a,a,a,a,a]"] + [f"&x{i} [{','.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 9)]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"stop: [{', '.join(layers)}]\n")
    out = tmp_path / "r.parquet"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rftcli", "rollout", "-d", str(dataset), "-m", TINY, "--out",
                           str(out), "--config", str(cfg)], capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 60
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "c.yaml" in lines[0] and "'stop'" in lines[0] and "list" in lines[0], proc.stderr
    assert len(lines[0]) < 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_alias_bomb_is_refused_in_milliseconds(tmp_path):
    from rftcli.stages import rollout

    layers = ["&x0 [a,a,a,a,a,a,a,a,a]"] + [f"&x{i} [{','.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 9)]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"stop: [{', '.join(layers)}]\n")
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"c\.yaml: setting 'stop': .*list"):
        build_config(rollout.Config, cfg, {"dataset": "d", "model": "m", "out": "o"})
    assert time.monotonic() - start < 2


def test_values_of_the_right_type_are_accepted(tmp_path):
    from rftcli.stages import rollout, score, train_grpo

    cfg = tmp_path / "c.yaml"
    cfg.write_text("split: '5'\ntemperature: 1\ntop_p: 0.5\nstop: '###'\nlimit: 3\nbatch_size: 8\n"
                   "dataset: data/x.parquet\nmodel: m\nout: o.parquet\ntrust_remote_code: yes\n")
    c = build_config(rollout.Config, cfg)
    assert (c.split, c.temperature, c.stop, c.limit, c.batch_size) == ("5", 1.0, ("###",), 3, 8)
    assert isinstance(c.temperature, float) and c.dataset == Path("data/x.parquet") and c.trust_remote_code is True
    cfg.write_text("batch_size: auto\nsplit: null\nstop: [a, b]\n")
    c = build_config(rollout.Config, cfg, {"dataset": "d", "model": "m", "out": "o"})
    assert (c.batch_size, c.split, c.stop) == ("auto", None, ("a", "b"))
    cfg.write_text("rewards: [accuracy=1, format=0.2]\ntimeout: 5\nworkers: 1\n")
    c = build_config(score.Config, cfg, {"rollouts": "r", "out": "o"})
    assert (c.rewards, c.timeout, c.workers) == (("accuracy=1", "format=0.2"), 5.0, 1)
    # PyYAML reads 1e-4 (no dot) as text; a float setting takes it as the number it spells.
    cfg.write_text("learning_rate: 1e-4\nrewards: accuracy\nepsilon_high: null\n")
    c = build_config(train_grpo.Config, cfg, {"dataset": "d", "model": "m", "out": "o"})
    assert (c.learning_rate, c.rewards, c.epsilon_high) == (1e-4, ("accuracy",), None)


def test_flags_still_win_and_are_not_rechecked_as_yaml(tmp_path):
    from rftcli.stages import rollout

    cfg = tmp_path / "c.yaml"
    cfg.write_text("limit: 4\n")
    c = build_config(rollout.Config, cfg, {"dataset": "d", "model": "m", "out": "o", "limit": 2, "stop": ("x",)})
    assert (c.limit, c.stop, c.out) == (2, ("x",), Path("o"))
