"""The score stage: isolation of failing rows, worker processes, group statistics and reward-hacking
diagnostics, resuming after a kill, through `score.run`, the worker pool and the CLI."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rftcli.cli import app
from rftcli.rewards.combine import FailureLog, Isolation, WeightedReward, apply_reward, load_rewards
from rftcli.rewards.pool import Chunk, WorkerPool, score_chunk
from rftcli.schema import read_table, write_table
from rftcli.shards import ShardedOutput, work_folder
from rftcli.stages import score

from .conftest import kill_once_shards

# A reward file with every way a row can go wrong: raise, spin in Python, block in C, kill its process.
MISBEHAVING = '''
import os, signal, time

def length(completions, **kwargs):
    out = []
    for c in completions:
        if "RAISE" in c:
            raise RuntimeError("cannot score this row")
        if "SPIN" in c:
            while True:
                pass
        if "STUCK" in c:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # the alarm cannot reach C code
            time.sleep(120)
        if "CRASH" in c:
            os._exit(3)
        out.append(len(c) / 100)
    return out

def short_list(completions, **kwargs):
    return [1.0] * (len(completions) - 1) if len(completions) > 1 else [1.0]
'''


def make_rollouts(path, completions, groups=None, num_tokens=None, answers=None):
    """A rollouts table with the given completions (and group indices, token counts, answers)."""
    n = len(completions)
    groups = groups if groups is not None else [i // 4 for i in range(n)]
    rows = []
    for i, text in enumerate(completions):
        rows.append({
            "id": f"p{groups[i]}", "split": "train", "task": "t", "system": None, "prompt": "How many?",
            "images": [], "answer": answers[i] if answers else "4", "answer_type": "number", "choices": None,
            "reasoning": None, "response": None, "metadata": None, "group_index": groups[i],
            "sample_index": i % 4, "completion": text, "completion_ids": [1, 2],
            "logprobs": [-0.5, -0.5], "num_tokens": num_tokens[i] if num_tokens else 2, "finish_reason": "stop",
            "policy": "p", "policy_hash": "h", "backend": "hf", "temperature": 1.0, "top_p": 1.0, "top_k": 0,
            "max_new_tokens": 64, "seed": 0})
    return write_table(path, "rollouts", rows, {"stage": "test"})


@pytest.fixture
def bad_rewards(tmp_path):
    path = tmp_path / "bad_rewards.py"
    path.write_text(MISBEHAVING)
    return path


# ---------------------------------------------------------------- isolation in process

def test_a_raising_or_spinning_row_gets_the_on_error_value_and_the_run_goes_on(tmp_path, bad_rewards):
    texts = ["<think>a b c</think><answer>4</answer>", "RAISE", "<answer>4</answer> SPIN", "ok 4", "fine"]
    src = make_rollouts(tmp_path / "r.parquet", texts)
    for on_error, fill in (("abstain", None), ("zero", 0.0)):
        out = tmp_path / f"s-{on_error}.parquet"
        start = time.perf_counter()
        result = score.run(score.Config(rollouts=src, out=out, rewards=(f"{bad_rewards}:length=2", "format=0.5"),
                                        workers=1, timeout=0.3, on_error=on_error))
        assert time.perf_counter() - start < 10
        rows = read_table(out, "scores").table.to_pylist()
        assert [r["reward_length"] for r in rows] == [pytest.approx(0.38), fill, fill, 0.04, 0.04]
        assert [r["reward_format"] for r in rows] == [1.0, 0.0, 0.0, 0.0, 0.0]
        assert [r["reward"] for r in rows] == [pytest.approx(1.26), 0.0, 0.0, 0.08, 0.08]
        assert result.errors == {"length": 1} and result.timeouts == {"length": 1}
        assert result.failure_messages == ["row 1: reward length: RuntimeError: cannot score this row",
                                           "row 2: reward length: no result within 0.3 s"]
        summary = read_table(out, "scores").manifest["summary"]
        assert summary["errors"] == {"length": 1} and summary["timeouts"] == {"length": 1}
        assert summary["failure_messages"] == result.failure_messages


def test_failures_are_logged_with_file_and_row(tmp_path, bad_rewards, caplog):
    src = make_rollouts(tmp_path / "r.parquet", ["a", "b RAISE", "c"])
    with caplog.at_level("WARNING", logger="rftcli.score"):
        score.run(score.Config(rollouts=src, out=tmp_path / "s.parquet", rewards=(f"{bad_rewards}:length",), workers=1))
    assert [r.getMessage() for r in caplog.records] == [
        f"{src}: row 1: reward length: RuntimeError: cannot score this row"]


def test_a_reward_returning_the_wrong_number_of_values_is_retried_row_by_row(tmp_path, bad_rewards):
    src = make_rollouts(tmp_path / "r.parquet", ["a", "b", "c"])
    result = score.run(score.Config(rollouts=src, out=tmp_path / "s.parquet", rewards=(f"{bad_rewards}:short_list",),
                                    workers=1))
    assert read_table(tmp_path / "s.parquet", "scores").table.column("reward_short_list").to_pylist() == [1.0] * 3
    assert result.errors == {} and result.timeouts == {}


def test_messages_are_kept_for_the_first_rows_only_but_all_are_counted(tmp_path, bad_rewards):
    src = make_rollouts(tmp_path / "r.parquet", ["RAISE"] * 12)
    result = score.run(score.Config(rollouts=src, out=tmp_path / "s.parquet", rewards=(f"{bad_rewards}:length",),
                                    workers=1, on_error="zero"))
    assert result.errors == {"length": 12} and len(result.failure_messages) == 5
    assert result.mean["length"] == 0.0


def test_isolated_reward_for_trl_keeps_its_name_and_passes_other_arguments_through(bad_rewards):
    from rftcli.rewards import get_reward

    fn = get_reward(f"{bad_rewards}:length")
    guarded = WeightedReward("length", 1.0, fn).isolated(Isolation(timeout_s=0.3, on_error="abstain"))
    assert guarded.__name__ == "length"
    state = object()  # TRL passes its trainer state and loggers, which are not per-row columns
    got = guarded(["ok", "RAISE", "SPIN now"], prompts=[[], [], []], completion_ids=[[1], [2], [3]],
                  trainer_state=state, log_metric=print)
    assert got == [0.02, None, None]


def test_apply_reward_counts_into_errors_and_failure_log():
    def flaky(completions, answer, **kwargs):
        return [1.0 / int(a) for a in answer]  # a zero answer divides by zero

    errors, failures = {}, FailureLog()
    values = apply_reward(WeightedReward("flaky", 1.0, flaky), ["a", "b", "c"], {"answer": ["1", "0", "4"]}, errors,
                          isolation=Isolation(on_error="zero"), failures=failures, offset=10)
    assert values == [1.0, 0.0, 0.25]
    assert errors == {"flaky": 1} and failures.errors == {"flaky": 1}
    assert failures.messages == ["row 11: reward flaky: ZeroDivisionError: float division by zero"]


def test_config_checks_settings():
    with pytest.raises(ValueError, match="on_error must be one of abstain, zero, got 'skip'"):
        score.Config(rollouts="r", out="o", on_error="skip")
    with pytest.raises(ValueError, match="timeout must be >= 0 seconds"):
        score.Config(rollouts="r", out="o", timeout=-1)
    with pytest.raises(ValueError, match="--workers must be >= 0"):
        score.Config(rollouts="r", out="o", workers=-2)


# ---------------------------------------------------------------- worker processes

def test_workers_write_the_same_table_as_one_process(tmp_path, bad_rewards):
    texts = [f"<think>step {i}</think><answer>{i % 7}</answer>" + (" RAISE" if i % 97 == 5 else "")
             for i in range(600)]  # three chunks
    src = make_rollouts(tmp_path / "r.parquet", texts, answers=[str(i % 5) for i in range(600)])
    specs = ("accuracy=1", "format=0.2", f"{bad_rewards}:length")
    one = score.run(score.Config(rollouts=src, out=tmp_path / "one.parquet", rewards=specs, workers=1))
    two = score.run(score.Config(rollouts=src, out=tmp_path / "two.parquet", rewards=specs, workers=2))
    a, b = pq.read_table(tmp_path / "one.parquet"), pq.read_table(tmp_path / "two.parquet")
    assert a.equals(b) and a.num_rows == 600
    assert a.column("completion").to_pylist() == texts  # input order kept
    assert one.errors == two.errors == {"length": 7} and two.workers == 2
    assert one.failure_messages == two.failure_messages
    assert one.diagnostics == two.diagnostics and one.mean == two.mean


def test_pool_kills_a_worker_stuck_in_c_code_or_dead_and_scores_the_other_rows(bad_rewards):
    specs = [f"{bad_rewards}:length", "format=0.5"]
    rewards = load_rewards(specs)
    texts = [f"row {i}" + {3: " SPIN", 7: " STUCK", 12: " CRASH"}.get(i, "") for i in range(15)]
    chunks = [Chunk(o, texts[o:o + 5], {"completion": texts[o:o + 5]}) for o in range(0, 15, 5)]
    isolation = Isolation(timeout_s=0.5, on_error="abstain")
    start = time.perf_counter()
    with WorkerPool(rewards, specs, 2, isolation, grace_s=0.5) as pool:
        results = list(pool.imap(chunks))
        restarts = pool.restarts
    assert time.perf_counter() - start < 60
    lengths = [v for r in results for v in r.per["length"]]
    assert lengths == [None if i in (3, 7, 12) else pytest.approx(len(texts[i]) / 100) for i in range(15)]
    assert [v for r in results for v in r.per["format"]] == [0.0] * 15  # the other reward scored every row
    failures = FailureLog()
    for r in results:
        failures.merge(r.failures)
    assert failures.timeouts == {"length": 2} and failures.errors == {"length": 1}
    assert failures.messages == ["row 3: reward length: no result within 0.5 s",
                                 "row 7: reward length: the worker was silent for 1 s and was killed",
                                 "row 12: reward length: the worker process died (exit code 3)"]
    assert restarts == 6  # stuck, then crashed: killed with the chunk, with the row alone, with the reward alone
    in_process = score_chunk(rewards, chunks[0], isolation)  # the chunk without a C-level failure
    assert in_process.per == results[0].per


# ---------------------------------------------------------------- summary and diagnostics

def test_group_statistics_and_reward_hacking_signals(tmp_path):
    texts = [
        # group 0: honest, varied
        "<think>two and two</think><answer>4</answer>", "<think>maybe five here</think><answer>5</answer>",
        "<think>count them all</think><answer>4</answer>", "<think>hm</think><answer>3</answer>",
        # group 1: collapsed onto one untagged answer
        "it is 4", "it is 4", "it is 4", "it is 4",
        # group 2: empty think, answer only while thinking
        "<think></think><answer>4</answer>", "<think>\\boxed{4}</think>", "<think> </think><answer>4</answer>",
        "<think><answer>4</answer></think>",
    ]
    lengths = [10, 20, 30, 40, 5, 5, 5, 5, 2, 8, 2, 8]
    src = make_rollouts(tmp_path / "r.parquet", texts, num_tokens=lengths)
    out = tmp_path / "s.parquet"
    result = score.run(score.Config(rollouts=src, out=out, rewards=("accuracy=1", "format=0.5"), workers=1))
    rows = read_table(out, "scores").table.to_pylist()
    # empty or trivial think: no format reward; an untagged answer: no accuracy (the answer slot only)
    rewards = [1.5, 0.5, 1.5, 0.0, 0, 0, 0, 0, 1, 0, 1, 0]
    assert [r["reward"] for r in rows] == rewards
    assert result.groups == 3 and result.zero_variance_groups == pytest.approx(1 / 3)
    assert result.group_std == pytest.approx((np.std([1.5, 0.5, 1.5, 0.0]) + 0.0 + 0.5) / 3)
    d = result.diagnostics
    assert d["answer_outside_tag"] == pytest.approx(4 / 12)
    assert d["answer_in_think_only"] == pytest.approx(2 / 12)
    assert d["think_empty"] == pytest.approx(2 / 12)
    assert d["think_trivial"] == pytest.approx(2 / 12)  # "hm", "\\boxed{4}"
    assert d["duplicate_completions"] == pytest.approx(3 / 12)
    assert d["identical_groups"] == pytest.approx(1 / 3)
    x, y = np.array(lengths, float), np.array(rewards, float)
    assert d["reward_length_corr"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    g = np.repeat(np.arange(3), 4)
    xc = x - np.array([x[g == k].mean() for k in g])
    yc = y - np.array([y[g == k].mean() for k in g])
    assert d["reward_length_corr_within"] == pytest.approx(np.corrcoef(xc, yc)[0, 1])
    assert d["reward_length_corr_within"] < -0.4  # within each group here, the longer completions were paid less
    manifest = read_table(out, "scores").manifest
    assert manifest["summary"]["diagnostics"] == pytest.approx(d)
    assert manifest["summary"]["group_std"] == pytest.approx(result.group_std)
    assert manifest["summary"]["mean"]["accuracy"] == pytest.approx(4 / 12)


def test_undefined_statistics_are_null_in_the_manifest(tmp_path):
    src = make_rollouts(tmp_path / "r.parquet", ["x", "x"], groups=[0, 1])  # single-row groups, constant reward
    result = score.run(score.Config(rollouts=src, out=tmp_path / "s.parquet", rewards=("format",), workers=1))
    assert math.isnan(result.diagnostics["reward_length_corr"]) and math.isnan(result.diagnostics["identical_groups"])
    raw = pq.read_schema(tmp_path / "s.parquet").metadata[b"rftcli.manifest"].decode()
    assert "NaN" not in raw
    assert json.loads(raw)["summary"]["diagnostics"]["reward_length_corr"] is None


def test_rescoring_a_scores_table_replaces_its_reward_columns(tmp_path):
    src = make_rollouts(tmp_path / "r.parquet", ["<answer>4</answer>", "<answer>5</answer>"])
    first = tmp_path / "s1.parquet"
    score.run(score.Config(rollouts=src, out=first, rewards=("accuracy", "format"), workers=1))
    again = tmp_path / "s2.parquet"
    score.run(score.Config(rollouts=first, out=again, rewards=("count=2",), workers=1))
    art = read_table(again, "scores")
    assert art.reward_names == ["count"]
    assert art.table.column("reward").to_pylist() == [2.0, 0.0]


def test_an_existing_output_is_refused_before_any_scoring(tmp_path, bad_rewards):
    src = make_rollouts(tmp_path / "r.parquet", ["SPIN"])
    out = tmp_path / "s.parquet"
    out.write_bytes(b"keep")
    start = time.perf_counter()
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        score.run(score.Config(rollouts=src, out=out, rewards=(f"{bad_rewards}:length",), timeout=5))
    assert time.perf_counter() - start < 2 and out.read_bytes() == b"keep"


# ---------------------------------------------------------------- command line

def test_cli_prints_failures_and_diagnostics(tmp_path, bad_rewards):
    src = make_rollouts(tmp_path / "r.parquet", ["<think>a</think><answer>4</answer>", "so 4", "RAISE", "x"])
    out = tmp_path / "s.parquet"
    result = CliRunner().invoke(app, ["score", "--rollouts", str(src), "--out", str(out), "-r", "accuracy",
                                      "-r", f"{bad_rewards}:length", "--workers", "1", "--timeout", "2",
                                      "--on-error", "zero"])
    assert result.exit_code == 0, result.output
    text = " ".join(re.sub(r"[\u2500-\u257f]", " ", result.output).split())  # without the table's borders
    for line in ("errors length 1", "answer outside tag 0.25", "duplicate completions 0", "mean group std",
                 "zero-variance groups 0", "workers 1"):
        assert line in text
    assert read_table(out, "scores").manifest["config"]["on_error"] == "zero"


def test_cli_rejects_a_bad_on_error_value_in_one_line(tmp_path):
    src = make_rollouts(tmp_path / "r.parquet", ["x"])
    result = CliRunner().invoke(app, ["score", "--rollouts", str(src), "--out", str(tmp_path / "s.parquet"),
                                      "--on-error", "ignore"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: on_error must be one of abstain, zero, got 'ignore'"


# ---------------------------------------------------------------- non-finite values

# A reward that sleeps RFT_TEST_SLEEP seconds per row (read at each call, so one file serves slow and
# fast runs alike), raises on RAISE, returns NaN/inf on NAN/INF/NEGINF, and is interrupted (Ctrl-C) on
# STOP while RFT_TEST_STOP is set.
STEADY = '''
import os, time

def steady(completions, **kwargs):
    time.sleep(float(os.environ.get("RFT_TEST_SLEEP", "0")) * len(completions))
    out = []
    for c in completions:
        if "STOP" in c and os.environ.get("RFT_TEST_STOP"):
            raise KeyboardInterrupt
        if "RAISE" in c:
            raise RuntimeError("cannot score this row")
        if "NAN" in c:
            out.append(float("nan"))
        elif "NEGINF" in c:
            out.append(float("-inf"))
        elif "INF" in c:
            out.append(float("inf"))
        else:
            out.append(len(c) % 7 / 7)
    return out
'''


@pytest.fixture
def steady_reward(tmp_path):
    path = tmp_path / "steady_reward.py"
    path.write_text(STEADY)
    return f"{path}:steady"


def _steady_value(text):
    return len(text) % 7 / 7


def test_nan_or_inf_from_a_reward_gets_the_on_error_value_and_is_counted(tmp_path, steady_reward, caplog):
    marks = {1: " NAN", 2: " INF", 3: " NEGINF", 260: " RAISE", 261: " NAN"}  # chunk 0 whole, chunk 1 row by row
    texts = [f"row {i}" + marks.get(i, "") for i in range(300)]
    src = make_rollouts(tmp_path / "r.parquet", texts)
    for on_error, fill in (("abstain", None), ("zero", 0.0)):
        out = tmp_path / f"s-{on_error}.parquet"
        with caplog.at_level("WARNING", logger="rftcli.score"):
            caplog.clear()
            result = score.run(score.Config(rollouts=src, out=out, rewards=(f"{steady_reward}=2", "format"),
                                            workers=1, on_error=on_error))
        table = read_table(out, "scores").table
        assert table.column("reward_steady").to_pylist() == [
            fill if i in marks else _steady_value(texts[i]) for i in range(300)]
        assert table.column("reward").to_pylist() == [
            0.0 if i in marks else 2 * _steady_value(texts[i]) for i in range(300)]
        assert result.errors == {"steady": 5} and result.timeouts == {}
        assert result.failure_messages == ["row 1: reward steady: returned nan", "row 2: reward steady: returned inf",
                                           "row 3: reward steady: returned -inf",
                                           "row 260: reward steady: RuntimeError: cannot score this row",
                                           "row 261: reward steady: returned nan"]
        assert [r.getMessage() for r in caplog.records] == [f"{src}: {m}" for m in result.failure_messages]
        assert read_table(out, "scores").manifest["summary"]["errors"] == {"steady": 5}
        assert math.isfinite(result.mean["steady"]) and math.isfinite(result.mean["reward"])


def test_nan_is_an_error_for_train_grpo_online_rewards_too(steady_reward, caplog):
    from rftcli.rewards import get_reward

    guarded = WeightedReward("steady", 1.0, get_reward(steady_reward)).isolated(Isolation(on_error="zero"))
    with caplog.at_level("WARNING", logger="rftcli.rewards"):
        got = guarded(["ok", "x NAN", "y INF"], prompts=[[], [], []])
    assert got == [2 / 7, 0.0, 0.0]
    assert [r.getMessage() for r in caplog.records] == ["row 1: reward steady: returned nan",
                                                        "row 2: reward steady: returned inf"]
    errors = {}
    values = apply_reward(WeightedReward("steady", 1.0, get_reward(steady_reward)), ["NAN"], {}, errors,
                          isolation=Isolation(on_error="abstain"), failures=FailureLog(), offset=7)
    assert values == [None] and errors == {"steady": 1}


# ---------------------------------------------------------------- resuming


def _big_rollouts(path, rollouts, rows):
    """`rows` rows of the session's rollouts (with their images), repeated with new group indices; a few
    completions marked to raise, so failures fall on both sides of a kill."""
    import pyarrow as pa
    import pyarrow.compute as pc

    base = read_table(rollouts, "rollouts").table
    copies = [base.set_column(base.schema.get_field_index("group_index"), "group_index",
                              pc.add(base.column("group_index"), k * 1000))
              for k in range(-(-rows // base.num_rows))]
    table = pa.concat_tables(copies).slice(0, rows)
    texts = [t + (" RAISE" if i % 500 == 3 else "") for i, t in enumerate(table.column("completion").to_pylist())]
    table = table.set_column(table.schema.get_field_index("completion"), "completion", pa.array(texts))
    return write_table(path, "rollouts", table, {"stage": "test"})


def _score_cmd(src, out, reward, *extra):
    return [sys.executable, "-m", "rftcli", "score", "--rollouts", str(src), "--out", str(out), "-r", reward,
            "-r", "format=0.5", "--workers", "1", *extra]


def test_resume_after_a_kill_gives_the_same_table_and_summary(tmp_path, rollouts, steady_reward):
    src = _big_rollouts(tmp_path / "big.parquet", rollouts, 2000)
    out = tmp_path / "killed.parquet"
    parts = work_folder(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RFT_TEST_SLEEP": "0.003"}  # ~0.8 s per chunk of 256 rows
    kill_once_shards(_score_cmd(src, out, steady_reward), parts, 1, env)
    assert not out.exists()
    shards = [pq.read_table(p) for p in parts.glob("part-*.parquet")]
    finished = sum(t.num_rows for t in shards)
    assert 0 < finished < 2000 and finished % score.CHUNK_ROWS == 0
    for t in shards:  # row numbers and values only: none of the input's columns, images least of all
        assert t.column_names == ["row", "chunk", "reward_steady", "reward_format", "reward"]

    resumed = subprocess.run(_score_cmd(src, out, steady_reward), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(rf"resumed rows\s*│\s*{finished}\s", resumed.stdout), resumed.stdout
    assert out.exists() and not parts.exists()

    whole = tmp_path / "whole.parquet"  # uninterrupted, in this process, without the sleep
    reference = score.run(score.Config(rollouts=src, out=whole, rewards=(steady_reward, "format=0.5"), workers=1))
    assert reference.resumed_rows == 0 and reference.errors == {"steady": 4}
    assert pq.read_table(out).equals(pq.read_table(whole))
    got, want = read_table(out, "scores").manifest["summary"], read_table(whole, "scores").manifest["summary"]
    assert got == want
    assert got["failure_messages"] == [f"row {i}: reward steady: RuntimeError: cannot score this row"
                                       for i in (3, 503, 1003, 1503)]  # from both runs' shards


def _interrupted(src, out, reward, monkeypatch, **settings):
    """Score until a reward is interrupted (Ctrl-C) at the row marked STOP; the work folder stays."""
    monkeypatch.setenv("RFT_TEST_STOP", "1")
    with pytest.raises(KeyboardInterrupt):
        score.run(score.Config(rollouts=src, out=out, rewards=(reward, "format=0.2"), workers=1, **settings))
    monkeypatch.delenv("RFT_TEST_STOP")
    assert not out.exists()
    return {p.name: p.read_bytes() for p in work_folder(out).iterdir()}


def test_resume_refuses_other_settings_allows_other_workers_and_overwrite_discards(tmp_path, steady_reward,
                                                                                   monkeypatch):
    texts = [f"<think>{i}</think><answer>{i % 5}</answer>" + {40: " NAN", 600: " NAN", 700: " STOP"}.get(i, "")
             for i in range(1000)]
    src = make_rollouts(tmp_path / "r.parquet", texts, answers=[str(i % 3) for i in range(1000)])
    whole = tmp_path / "whole.parquet"
    reference = score.run(score.Config(rollouts=src, out=whole, rewards=(steady_reward, "format=0.2"), workers=1))
    out = tmp_path / "s.parquet"
    before = _interrupted(src, out, steady_reward, monkeypatch)
    assert pq.read_table(work_folder(out) / "part-000000.parquet").column("row").to_pylist() == list(range(512))

    # Other settings: refused with exit 2, the work folder as it was.
    for args, diff in ((["-r", "format=0.2", "--on-error", "zero"], 'settings.on_error: "abstain" then, "zero" now'),
                       (["-r", "format=0.3"], "settings.rewards: "),
                       (["-r", "format=0.2", "--timeout", "3"], "settings.timeout: 10.0 then, 3.0 now")):
        result = CliRunner().invoke(app, ["score", "--rollouts", str(src), "--out", str(out), "-r", steady_reward,
                                          *args])
        assert result.exit_code == 2, result.output
        assert f"holds a partial run with other settings ({diff}" in result.output
        assert {p.name: p.read_bytes() for p in work_folder(out).iterdir()} == before
    assert not out.exists()

    # The same settings with other workers: resumes, and ends with the uninterrupted run's table.
    again = score.run(score.Config(rollouts=src, out=out, rewards=(steady_reward, "format=0.2"), workers=2))
    assert again.resumed_rows == 512 and again.workers == 2
    assert pq.read_table(out).equals(pq.read_table(whole)) and not work_folder(out).exists()
    assert again.errors == reference.errors == {"steady": 2}
    assert again.failure_messages == reference.failure_messages == ["row 40: reward steady: returned nan",
                                                                    "row 600: reward steady: returned nan"]
    summary = read_table(out, "scores").manifest["summary"]
    assert {**summary, "workers": 1} == read_table(whole, "scores").manifest["summary"]

    # --overwrite discards a work folder of other settings and starts again.
    out2 = tmp_path / "s2.parquet"
    _interrupted(src, out2, steady_reward, monkeypatch)
    result = CliRunner().invoke(app, ["score", "--rollouts", str(src), "--out", str(out2), "-r", steady_reward,
                                      "-r", "format=0.2", "--on-error", "zero", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert re.search(r"resumed rows\s*│\s*0\s", result.output), result.output
    assert not work_folder(out2).exists()
    table = read_table(out2, "scores").table
    assert table.column("reward_steady")[40].as_py() == 0.0  # on_error zero: the new setting, not the old rows
    assert table.column("reward").to_pylist()[:40] == pq.read_table(whole).column("reward").to_pylist()[:40]


def test_resume_key_follows_the_reward_file_content(tmp_path, steady_reward, monkeypatch):
    texts = [f"row {i}" + (" STOP" if i == 300 else "") for i in range(400)]
    src = make_rollouts(tmp_path / "r.parquet", texts)
    out = tmp_path / "s.parquet"
    _interrupted(src, out, steady_reward, monkeypatch)
    path = steady_reward.rpartition(":")[0]
    with open(path, "a") as fh:
        fh.write("\n# edited: its values may differ now\n")
    with pytest.raises(ValueError, match=r"settings.rewards: .* then, .* now\); rerun with the same settings"):
        score.run(score.Config(rollouts=src, out=out, rewards=(steady_reward, "format=0.2"), workers=1))


def test_plain_shards_resume_and_finish_without_a_schema(tmp_path):
    import pyarrow as pa

    out = tmp_path / "plain.parquet"
    with ShardedOutput(out, None, {"n": 1}, ("k",)) as shards:
        shards.write(pa.table({"k": [2, 3], "v": [0.5, None]}), {"part": 1})
        shards.write([{"k": 0, "v": 1.0}], {"part": 2})
    with pytest.raises(FileExistsError, match="holds plain Parquet shards"):
        with ShardedOutput(out, "dataset", {"n": 1}, ("id",)):
            pass
    with ShardedOutput(out, None, {"n": 1}, ("k",)) as shards:
        assert shards.resumed and shards.done == {(0,), (2,), (3,)}
        assert shards.manifests() == [{"part": 1}, {"part": 2}]
        shards.finish({"stage": "test"}, sort_by=["k"])
    assert not work_folder(out).exists()
    table = pq.read_table(out)
    assert table.to_pydict() == {"k": [0, 2, 3], "v": [1.0, 0.5, None]}
    assert json.loads(table.schema.metadata[b"rftcli.manifest"]) == {"stage": "test"}
