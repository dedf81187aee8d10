"""Reward plugins that fail, for every stage that runs rewards (score, train-grpo online, eval).

A plugin that cannot be loaded (no file, no such function, an import that raises, a syntax error) stops
the stage before any work: one `error:` line naming the reward and the file, exit 2, nothing written.
A plugin that loads but fails on rows (raises, hangs past `--timeout`, returns NaN or infinity, takes
the wrong arguments) does not stop the run: each such row gets the `--on-error` value (null by default),
is counted and logged with its row number, and the run ends with exit 0 - one broken reward among
several must not throw away hours of sampling. These are the outcomes the tests pin down.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rftcli.cli import app

runner = CliRunner()

PLUGIN = '''
import time

def boom(completions, **kw):
    raise RuntimeError("boom")

def hang(completions, **kw):
    time.sleep(60)

def nan(completions, **kw):
    return [float("nan") if i % 2 else float("inf") for i in range(len(completions))]

def no_args():
    return 1.0

def quits(completions, **kw):
    import sys
    sys.exit(3)
'''


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "plug.py").write_text(PLUGIN)
    (folder / "raises_on_import.py").write_text('raise RuntimeError("no licence server")\n')
    (folder / "syntax.py").write_text("def f(:\n    pass\n")
    return folder


def _commands(stage: str, rollouts, dataset, model, out, spec: str) -> list[str]:
    return {
        "score": ["score", "--rollouts", rollouts, "-r", spec, "-r", "format=0.2", "--timeout", "0.5",
                  "--workers", "1", "--out", f"{out}.parquet"],
        "train-grpo": ["train-grpo", "-d", dataset, "-m", model, "-r", spec, "-r", "format=0.2", "--out", out,
                       "--max-steps", "1", "--batch-size", "4", "--num-generations", "2",
                       "--max-completion-length", "4", "--limit", "2"],
        "eval": ["eval", "-d", dataset, "-m", model, "-r", spec, "--out", out, "--limit", "2",
                 "--max-new-tokens", "4"],
    }[stage]


STAGES = ["score", "train-grpo", "eval"]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("spec,expected", [
    ("{d}/missing.py:f", "no file {d}/missing.py"),
    ("{d}/plug.py:nowhere", "has no attribute 'nowhere'"),
    ("{d}/raises_on_import.py:f", "loading {d}/raises_on_import.py raised RuntimeError: no licence server"),
    ("{d}/syntax.py:f", "loading {d}/syntax.py raised SyntaxError at line 1"),
    ("no_such_package.rewards:f", "cannot import 'no_such_package.rewards'"),
], ids=["no-file", "no-function", "raises-on-import", "syntax-error", "no-module"])
def test_a_plugin_that_cannot_load_stops_before_any_work(stage, spec, expected, plugins, rollouts, dataset,
                                                          tiny_model_dir, tmp_path):
    spec, expected = spec.format(d=plugins), expected.format(d=plugins)
    before = {p: p.read_bytes() for p in (rollouts, dataset)}
    result = runner.invoke(app, [str(a) for a in _commands(stage, rollouts, dataset, tiny_model_dir,
                                                            tmp_path / "out", spec)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith(f"error: reward {spec!r}: ") and expected in lines[0], lines
    assert list(tmp_path.iterdir()) == [] and {p: p.read_bytes() for p in before} == before


@pytest.mark.parametrize("fn,message", [("boom", "RuntimeError: boom"), ("hang", "no result within 0.5 s"),
                                        ("nan", "returned inf"), ("no_args", "TypeError"),
                                        ("quits", "SystemExit: 3")])
def test_score_a_plugin_that_fails_on_rows_abstains_there_and_says_where(fn, message, plugins, rollouts, tmp_path):
    out = tmp_path / "scores.parquet"
    result = runner.invoke(app, _commands("score", str(rollouts), "", "", str(tmp_path / "scores"),
                                          f"{plugins}/plug.py:{fn}"))
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    n = table.num_rows
    assert table.column(f"reward_{fn}").null_count == n  # every row abstained: the default --on-error
    assert all(math.isfinite(v) for v in table.column("reward").to_pylist())  # the total stays usable
    summary = json.loads(pq.read_metadata(out).metadata[b"rftcli.manifest"])["summary"]
    failed = summary["timeouts" if fn == "hang" else "errors"][fn]
    assert failed == n and any(f"row 0: reward {fn}: {message}" in m for m in summary["failure_messages"])


def test_train_grpo_and_eval_go_on_when_a_plugin_raises(plugins, dataset, tiny_model_dir, tmp_path):
    spec = f"{plugins}/plug.py:boom"
    grpo = runner.invoke(app, [str(a) for a in _commands("train-grpo", "", dataset, tiny_model_dir,
                                                          tmp_path / "grpo", spec)])
    assert grpo.exit_code == 0, grpo.output
    assert (tmp_path / "grpo" / "adapter_model.safetensors").is_file()
    ev = runner.invoke(app, [str(a) for a in _commands("eval", "", dataset, tiny_model_dir, tmp_path / "ev", spec)])
    assert ev.exit_code == 0, ev.output
    results = pq.read_table(tmp_path / "ev" / "results.parquet")
    assert results.column("reward_boom").null_count == results.num_rows


def test_train_grpo_stops_when_every_reward_fails_on_a_whole_batch(plugins, dataset, tiny_model_dir, tmp_path):
    """Nothing can be learnt from a batch without a single reward; TRL warned per row with the row's whole
    content (images included) and trained on. One line, exit 2, no output."""
    command = [str(a) for a in _commands("train-grpo", "", dataset, tiny_model_dir, tmp_path / "grpo",
                                         f"{plugins}/plug.py:boom")]
    at = command.index("format=0.2")
    del command[at - 1:at + 1]  # boom alone
    result = subprocess.run([sys.executable, "-m", "rftcli", *command], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "every reward failed on every completion of a training batch" in lines[0]
    assert "row 0: reward boom: RuntimeError: boom" in lines[0]
    assert "All reward functions returned None" not in result.stdout + result.stderr
    assert not (tmp_path / "grpo").exists()
