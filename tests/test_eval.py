"""eval: metrics against hand-worked tables, comparisons and flips, the report with and without
matplotlib, presets, resuming, and the stage end to end on the tiny model."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rftcli import benchmarks, metrics
from rftcli.report import read_training_metrics, write_report
from rftcli.schema import read_table
from rftcli.stages import eval as eval_stage
from rftcli.stages import prepare_data

from .conftest import TINY

PNG = b"\x89PNG\r\n\x1a\n"


def _row(pid, j, completion, correct, *, tokens=5, finish="stop", fmt=False, task="count", answer="3",
         answer_type="number", choices=None, metadata=None, reward=None):
    return {"id": pid, "sample_index": j, "completion": completion, "correct": correct, "num_tokens": tokens,
            "finish_reason": finish, "format_ok": fmt, "task": task, "answer": answer, "answer_type": answer_type,
            "choices": choices, "metadata": None if metadata is None else json.dumps(metadata),
            "reward_accuracy": float(correct) if reward is None else reward}


def _table() -> list[dict]:
    """3 prompts x 4 samples, worked by hand in test_summary_of_a_hand_worked_table."""
    p1 = [("<answer>3</answer>", True), ("<answer>4</answer>", False), ("<answer>3</answer>", True),
          ("<answer>4</answer>", False)]
    p2 = [("<answer>5</answer>", True), ("<answer>6</answer>", False), ("<answer>6</answer>", False),
          ("no answer here", False)]
    p3 = [("<answer>(B)</answer>", True), ("<answer>blue</answer>", True), ("<answer>A</answer>", False),
          ("<answer>A.</answer>", False)]
    rows = []
    rows += [_row("p1", j, c, ok, metadata={"category": "easy"}) for j, (c, ok) in enumerate(p1)]
    rows += [_row("p2", j, c, ok, answer="5", metadata={"category": ["hard", "easy"]}) for j, (c, ok) in enumerate(p2)]
    rows += [_row("p3", j, c, ok, task="color", answer="B", answer_type="choice", choices=["red", "blue"])
             for j, (c, ok) in enumerate(p3)]
    for i, r in enumerate(rows):
        r["num_tokens"] = i + 1  # 1..12
        r["finish_reason"] = "length" if i + 1 >= 11 else "stop"
        r["format_ok"] = i in (0, 4, 8)
    rows[3]["reward_accuracy"] = None  # an abstention is left out of the reward mean
    return rows


# ---------------------------------------------------------------- pass@k and maj@k

@pytest.mark.parametrize("n, c, k, expected", [
    (5, 2, 1, 2 / 5),
    (5, 2, 2, 1 - 3 / 10),   # 1 - C(3,2)/C(5,2)
    (5, 2, 3, 1 - 1 / 10),   # 1 - C(3,3)/C(5,3)
    (5, 2, 4, 1.0),          # fewer than 4 wrong samples: every draw holds a correct one
    (5, 0, 3, 0.0),
    (4, 1, 2, 1 - 3 / 6),
    (10, 3, 5, 1 - 21 / 252),  # C(7,5) = 21, C(10,5) = 252
])
def test_pass_at_k_unbiased_estimator(n, c, k, expected):
    assert metrics.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_the_papers_product_form():
    # Chen et al. 2021, Figure 3: 1 - prod(1 - k / arange(n - c + 1, n + 1)).
    for n in range(1, 21):
        for c in range(n + 1):
            for k in range(1, n + 1):
                paper = 1.0 if n - c < k else 1.0 - math.prod(1 - k / i for i in range(n - c + 1, n + 1))
                assert metrics.pass_at_k(n, c, k) == pytest.approx(paper, abs=1e-9)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        metrics.pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        metrics.pass_at_k(4, 5, 1)


def test_reported_ks():
    assert metrics.reported_ks(1) == [1]
    assert metrics.reported_ks(5) == [1, 2, 4, 5]
    assert metrics.reported_ks(8) == [1, 2, 4, 8]


def test_votes_count_equal_answers_however_written():
    key = metrics.answer_key
    assert key("(B)", "B", "choice", ["red", "blue"]) == key("blue", "B", "choice", ["red", "blue"]) == ("choice", "B")
    assert key("1,000", "1000", "number", None) == key("1000.0", "1000", "number", None)
    assert key("[10, 20.4, 30, 40]", "[10, 20, 30, 40]", "box", None) == ("box", (10, 20, 30, 40))
    assert key("Paris!", "paris", "text", None) == key("paris", "paris", "text", None)
    assert key(None, "3", "number", None) is None and key("  ", "3", "number", None) is None
    assert metrics.majority_index([None, "a", "b", "b", "a"]) == 1  # a tie goes to the first seen
    assert metrics.majority_index(["a", "b", "b"]) == 1
    assert metrics.majority_index([None, None]) is None


def test_percentile_interpolates_like_numpy():
    assert metrics.percentile(list(range(1, 13)), 0.95) == pytest.approx(11.45)
    assert metrics.percentile([7], 0.95) == 7
    assert metrics.percentile([1, 2, 3, 4], 0.5) == 2.5
    assert math.isnan(metrics.percentile([], 0.5))


def test_summary_of_a_hand_worked_table():
    s = metrics.summarize(_table(), seconds=2.0, category_key="category", reward_names=["accuracy"])
    assert (s["rows"], s["prompts"], s["samples"]) == (12, 3, 4)
    # correct samples: p1 2/4, p2 1/4, p3 2/4
    assert s["accuracy"] == pytest.approx(5 / 12)
    assert s["pass_at_k"]["1"] == pytest.approx(5 / 12)
    assert s["pass_at_k"]["2"] == pytest.approx((5 / 6 + 1 / 2 + 5 / 6) / 3)  # 1 - C(2,2)/C(4,2), 1 - C(3,2)/C(4,2)
    assert s["pass_at_k"]["4"] == 1.0
    assert list(s["pass_at_k"]) == ["1", "2", "4"]
    # votes: p1 3 vs 4 tie -> 3 (first seen, right); p2 6 wins (wrong); p3 B ("(B)", "blue") vs A ("A", "A.") tie -> B
    assert s["maj_at_k"] == {"4": pytest.approx(2 / 3)}
    assert s["accuracy_by_task"] == {"color": 0.5, "count": pytest.approx(3 / 8)}
    assert s["accuracy_by_answer_type"] == {"choice": 0.5, "number": pytest.approx(3 / 8)}
    # p2 is both hard and easy; p3 has no category
    assert s["accuracy_by_category"] == {"easy": pytest.approx(3 / 8), "hard": 0.25}
    assert s["format_rate"] == 0.25
    assert s["mean_reward"]["accuracy"] == pytest.approx(5 / 11)  # row 3 (a wrong one, 0.0) abstained
    assert s["mean_tokens"] == 6.5 and s["p95_tokens"] == pytest.approx(11.45)
    assert s["truncation_rate"] == pytest.approx(2 / 12)
    assert s["tokens_per_s"] == 39.0


def test_categories_from_columns_nested_metadata_and_lists():
    r = _row("p", 0, "", True, answer="4", metadata={"source": {"name": "clevr"}, "skills": ["count", "color"]})
    assert metrics.row_categories(r, "answer") == ["4"]
    assert metrics.row_categories(r, "source.name") == ["clevr"]
    assert metrics.row_categories(r, "skills") == ["count", "color"]
    assert metrics.row_categories(r, "missing") == []


def test_mathvista_breaks_down_by_its_metadata_task_not_the_task_column():
    from rftcli import benchmarks

    rows = [_row(f"p{i}", 0, "", ok, task="mathvista", metadata={"task": t})
            for i, (t, ok) in enumerate([("figure question answering", True), ("math word problem", False),
                                         ("figure question answering", False)])]
    assert metrics.row_categories(rows[0], "task") == ["mathvista"]
    assert metrics.row_categories(rows[0], "metadata.task") == ["figure question answering"]
    key = benchmarks.get_preset("mathvista").category_key
    s = metrics.summarize(rows, seconds=1.0, category_key=key)
    assert s["accuracy_by_category"] == {"figure question answering": 0.5, "math word problem": 0.0}


# ---------------------------------------------------------------- comparison and flips

def _greedy(label_correct: dict[str, bool], label: str) -> list[dict]:
    rows = []
    for pid, ok in label_correct.items():
        category = "easy" if pid != "p3" else "hard"
        rows.append(_row(pid, 0, f"<answer>{'3' if ok else '9'}</answer>", ok, metadata={"category": category}))
    return rows


def test_comparison_deltas_and_flips_between_consecutive_models():
    tables = {"a": _greedy({"p1": True, "p2": False, "p3": True}, "a"),
              "b": _greedy({"p1": False, "p2": True, "p3": True}, "b"),
              "c": _greedy({"p1": True, "p2": True, "p3": True}, "c")}
    summaries = {m: metrics.summarize(rows, 1.0) for m, rows in tables.items()}
    comparison = metrics.compare(summaries)
    assert comparison["baseline"] == "a"
    assert comparison["deltas"]["a"]["accuracy"] == 0
    assert comparison["deltas"]["b"]["accuracy"] == pytest.approx(0)
    assert comparison["deltas"]["c"]["accuracy"] == pytest.approx(1 / 3)
    assert comparison["deltas"]["c"]["accuracy_by_category"] == {"easy": pytest.approx(0.5), "hard": 0.0}
    assert comparison["deltas"]["c"]["maj_at_k"] == {"1": pytest.approx(1 / 3)}

    outcomes = {m: metrics.prompt_outcomes(rows) for m, rows in tables.items()}
    assert outcomes["a"]["p2"] == (False, "9")
    flips = metrics.flip_summary(outcomes)
    assert [(f["from"], f["to"]) for f in flips] == [("a", "b"), ("b", "c")]
    assert flips[0]["wrong_to_right"] == ["p2"] and flips[0]["right_to_wrong"] == ["p1"] and flips[0]["net"] == 0
    assert (flips[0]["both_right_count"], flips[0]["both_wrong_count"]) == (1, 0)
    assert flips[1]["wrong_to_right"] == ["p1"] and flips[1]["right_to_wrong"] == [] and flips[1]["net"] == 1


def test_flips_with_samples_use_the_majority_answer():
    before = metrics.prompt_outcomes([_row("p", j, f"<answer>{a}</answer>", a == "3") for j, a in enumerate("344")])
    after = metrics.prompt_outcomes([_row("p", j, f"<answer>{a}</answer>", a == "3") for j, a in enumerate("433")])
    assert before["p"] == (False, "4") and after["p"] == (True, "3")
    assert metrics.flips(before, after)["wrong_to_right"] == ["p"]


def test_majority_vote_counts_only_answers_in_the_answer_slot():
    # Two samples mention 4 outside the slot (a file name, the think text); one answers 3 in the slot.
    # Lenient extraction would elect 4; the vote reads the slot as `correct` does, so 3 wins alone.
    texts = ["<think>img_4 has 4</think> it is 4", "I count 4", "<answer>3</answer>"]
    outcome = metrics.prompt_outcomes([_row("p", j, t, j == 2) for j, t in enumerate(texts)])
    assert outcome["p"] == (True, "3")


# ---------------------------------------------------------------- report

def _summary_for_report() -> tuple[dict, dict]:
    rows = {"base": _table(), "tuned": [{**r, "correct": True, "num_tokens": 3} for r in _table()]}
    models = {m: {"model": m, "resumed": False, **metrics.summarize(r, 1.0)} for m, r in rows.items()}
    outcomes = {m: metrics.prompt_outcomes(r) for m, r in rows.items()}
    summary = {"dataset": "d.parquet", "split": "test", "preset": None, "samples": 4, "temperature": 0.7, "top_p": 1.0,
               "max_new_tokens": 12, "scorer": "accuracy", "models": models, "comparison": metrics.compare(models),
               "flips": metrics.flip_summary(outcomes)}
    lengths = {m: [x["num_tokens"] for x in r] for m, r in rows.items()}
    return summary, lengths


def _metrics_file(folder: Path) -> Path:
    folder.mkdir(parents=True)
    lines = [{"step": 1, "loss": 0.5, "reward": 0.1, "kl": 0.0}, {"step": 2, "loss": 0.4, "reward": 0.3, "kl": 0.02},
             {"step": 3, "loss": 0.3, "reward": 0.6, "kl": 0.05}, {"train_runtime": 12.0, "train_loss": 0.4}]
    path = folder / "metrics.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_training_metrics_are_read_per_step(tmp_path):
    curves = read_training_metrics(_metrics_file(tmp_path / "grpo"))
    assert curves == {"reward": [(1, 0.1), (2, 0.3), (3, 0.6)], "kl": [(1, 0.0), (2, 0.02), (3, 0.05)],
                      "loss": [(1, 0.5), (2, 0.4), (3, 0.3)]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1}\n{"step": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2: not valid JSON"):
        read_training_metrics(bad)


def test_report_with_matplotlib_has_charts(tmp_path):
    pytest.importorskip("matplotlib")
    summary, lengths = _summary_for_report()
    metrics_path = _metrics_file(tmp_path / "grpo")
    out = tmp_path / "report"
    out.mkdir()
    written = write_report(out, summary, lengths, [metrics_path])
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.png", "lengths.png", "report.md", "training.png"]
    for name in ("accuracy.png", "lengths.png", "training.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert written == {"report": "report.md", "charts": ["accuracy.png", "lengths.png", "training.png"],
                       "charts_skipped": None}
    md = (out / "report.md").read_text()
    assert "![accuracy by group](accuracy.png)" in md and "![training curves](training.png)" in md
    assert "| base | 41.7% |  | 100.0% | 66.7% |" in md
    assert "| tuned | 100.0% | +58.3 pp | 100.0% | 100.0% |" in md
    assert "| grpo | reward | 3 | 0.1000 | 0.6000 |" in md
    assert "| base → tuned | 1 | 0 | +1 | 2 | 0 |" in md  # p2 flipped by majority vote
    assert "skipped" not in md


def test_report_without_matplotlib_says_so(tmp_path, monkeypatch):
    # A None entry in sys.modules makes `import matplotlib` raise ImportError, as on a machine without it.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    summary, lengths = _summary_for_report()
    out = tmp_path / "report"
    out.mkdir()
    written = write_report(out, summary, lengths, [_metrics_file(tmp_path / "grpo")])
    assert [p.name for p in out.iterdir()] == ["report.md"]
    assert written["charts"] == [] and "matplotlib is not installed" in written["charts_skipped"]
    md = (out / "report.md").read_text()
    assert "Charts skipped: matplotlib is not installed (`pip install 'rftcli[report]'`)" in md
    assert "| base | 41.7% |" in md and "| grpo | reward | 3 | 0.1000 | 0.6000 |" in md
    assert ".png" not in md


# ---------------------------------------------------------------- presets

def test_presets_fill_only_what_was_not_given():
    c = eval_stage.Config(dataset=Path("d"), models=("m",), out=Path("o"), preset="refcoco")
    assert (c.split, c.max_new_tokens, c.scorer, c.category_key, c.rewards) == ("all", 256, "iou_50", "category",
                                                                                 ("iou",))
    c = eval_stage.Config(dataset=Path("d"), models=("m",), out=Path("o"), preset="mathvista", split="test",
                          max_new_tokens=32)
    assert (c.split, c.max_new_tokens, c.scorer) == ("test", 32, "rftcli.benchmarks:precision_accuracy")
    plain = eval_stage.Config(dataset=Path("d"), models=("m",), out=Path("o"))
    assert (plain.split, plain.max_new_tokens, plain.scorer, plain.category_key) == ("test", 64, "accuracy", "category")
    with pytest.raises(ValueError, match="unknown preset 'mmmu'; presets: mathvista, geometry3k, clevr-count, refcoco"):
        eval_stage.Config(dataset=Path("d"), models=("m",), out=Path("o"), preset="mmmu")


def test_preset_prompts_list_choices_and_ask_for_a_box():
    from rftcli.tasks import INSTRUCTION

    geo = benchmarks.get_preset("geometry3k")
    row = {"prompt": f"Find x. {INSTRUCTION}", "answer_type": "choice", "choices": ["3", "4.5"]}
    assert benchmarks.build_prompt(geo, row) == f"Find x.\nA. 3\nB. 4.5\n{INSTRUCTION}"
    listed = {**row, "prompt": f"Find x.\n(A) 3 (B) 4.5\n{INSTRUCTION}"}
    assert benchmarks.build_prompt(geo, listed) == listed["prompt"]  # already listed: unchanged
    ref = benchmarks.get_preset("refcoco")
    box_row = {"prompt": "the man on the left", "answer_type": "box", "choices": None}
    asked = benchmarks.build_prompt(ref, box_row)
    assert asked == benchmarks.GROUNDING_REQUEST + "the man on the left"
    assert benchmarks.build_prompt(ref, {**box_row, "prompt": asked}) == asked  # as prepare-data writes it


def test_presets_refuse_or_select_rows_by_answer_type():
    rows = [{"id": "a", "answer_type": "choice"}, {"id": "b", "answer_type": "box"}, {"id": "c", "answer_type": "number"}]
    with pytest.raises(ValueError, match=r"d.parquet: row 1 \(id 'b'\), column 'answer_type': 'box' is not scored "
                                         r"by preset mathvista \(expects choice, number, text\)"):
        benchmarks.select_rows(benchmarks.get_preset("mathvista"), rows, "d.parquet")
    # CLEVR mixes counting with yes/no and attribute questions: the counting preset keeps the counts.
    assert benchmarks.select_rows(benchmarks.get_preset("clevr-count"), rows, "d.parquet") == [rows[2]]


def test_mathvista_precision_scorer():
    completions = ["<answer>1.449</answer>", "<answer>1.46</answer>", "<answer>1.449</answer>", "<answer>(B)</answer>"]
    got = benchmarks.precision_accuracy(
        completions, answer=["1.45", "1.45", "1.45", "145°"], answer_type=["number", "number", "number", "choice"],
        choices=[None, None, None, ["120°", "145°"]],
        metadata=[json.dumps({"precision": 2.0}), json.dumps({"precision": 2}), None, None])
    assert got == [1.0, 0.0, 0.0, 1.0]  # without a precision 1.449 != 1.45


# ---------------------------------------------------------------- the stage on the tiny model

PARITY = "def parity(completions, **kw):\n    return [float(len(c) % 2 == 0) for c in completions]\n"


def test_eval_with_samples_writes_everything_consistent_with_its_rows(tmp_path, dataset, sft_adapter):
    scorer = tmp_path / "graded.py"
    scorer.write_text(PARITY)  # a scorer the tiny model passes about half the time, so numbers are not all 0
    out = tmp_path / "eval"
    result = eval_stage.run(eval_stage.Config(
        dataset=dataset, models=(TINY, str(sft_adapter)), labels=("base", "sft"), out=out, samples=3,
        temperature=1.0, max_new_tokens=6, limit=4, batch_size=3, scorer=f"{scorer}:parity",
        metrics=(sft_adapter / "metrics.jsonl",), category_key="answer"), progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["accuracy.png", "flips.json", "lengths.png", "report.md", "results.parquet", "summary.json",
                     "training.png"]
    assert not (tmp_path / "eval.parts").exists()
    art = read_table(out / "results.parquet", "eval")
    assert art.reward_names == ["parity", "format"]
    rows = art.table.to_pylist()
    assert len(rows) == 2 * 4 * 3
    assert sorted({r["sample_index"] for r in rows}) == [0, 1, 2]
    assert all(r["correct"] == (len(r["completion"]) % 2 == 0) for r in rows)
    assert 0 < sum(r["correct"] for r in rows) < len(rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["manifest"]["config"]["samples"] == 3
    for label in ("base", "sft"):
        mine = [r for r in rows if r["model"] == label]
        again = metrics.summarize(mine, 1.0, "answer", ["parity", "format"])
        s = summary["models"][label]
        for key in ("accuracy", "pass_at_k", "maj_at_k", "accuracy_by_category", "mean_tokens", "truncation_rate"):
            assert s[key] == pytest.approx(again[key]), key
        assert list(s["pass_at_k"]) == ["1", "2", "3"] and s["resumed"] is False
        assert s["accuracy"] == result.summary["models"][label]["accuracy"]
    outcomes = {m: metrics.prompt_outcomes([r for r in rows if r["model"] == m]) for m in ("base", "sft")}
    flips = metrics.flips(outcomes["base"], outcomes["sft"])
    assert summary["flips"][0]["wrong_to_right"] == flips["wrong_to_right"]
    details = json.loads((out / "flips.json").read_text())
    assert sorted(d["id"] for d in details) == sorted(flips["wrong_to_right"] + flips["right_to_wrong"])
    assert "## Training" in (out / "report.md").read_text()


def test_paired_seeds_make_the_same_model_agree_with_itself(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "eval"
    result = eval_stage.run(eval_stage.Config(
        dataset=dataset, models=(TINY, str(tiny_model_dir)), labels=("a", "b"), out=out, samples=2,
        max_new_tokens=6, limit=3, seed=5), progress=False)
    rows = read_table(out / "results.parquet", "eval").table.to_pylist()
    a = [r["completion"] for r in rows if r["model"] == "a"]
    assert a == [r["completion"] for r in rows if r["model"] == "b"]
    assert result.summary["flips"][0]["wrong_to_right_count"] == result.summary["flips"][0]["right_to_wrong_count"] == 0


INTERRUPTING = """from pathlib import Path

FLAG = Path(__file__).with_name("interrupt-after")


def parity(completions, **kw):
    # Ctrl-C after the number of scored batches the flag file holds, once.
    if FLAG.exists():
        left = int(FLAG.read_text())
        if left == 0:
            FLAG.unlink()
            raise KeyboardInterrupt
        FLAG.write_text(str(left - 1))
    return [float(len(c) % 2 == 0) for c in completions]
"""


def _interrupted_run(tmp_path, dataset, tiny_model_dir, **settings):
    scorer = tmp_path / "scorer.py"
    scorer.write_text(INTERRUPTING)
    (tmp_path / "interrupt-after").write_text("1")  # the second batch of the first model is never written
    config = dict(dataset=dataset, models=(TINY, str(tiny_model_dir)), labels=("a", "b"), samples=2,
                  max_new_tokens=6, limit=4, batch_size=2, scorer=f"{scorer}:parity", **settings)
    with pytest.raises(KeyboardInterrupt):
        eval_stage.run(eval_stage.Config(out=tmp_path / "eval", **config), progress=False)
    return config


def test_eval_resumes_an_interrupted_run_and_ends_as_an_uninterrupted_one(tmp_path, dataset, tiny_model_dir):
    config = _interrupted_run(tmp_path, dataset, tiny_model_dir)
    out = tmp_path / "eval"
    assert not out.exists()
    parts = sorted(p.name for p in (tmp_path / "eval.parts").glob("part-*.parquet"))
    assert parts == ["part-000000.parquet"]
    shard = read_table(tmp_path / "eval.parts" / parts[0], "eval").table
    assert set(shard.column("model").to_pylist()) == {"a"} and shard.num_rows == 2 * 2

    result = eval_stage.run(eval_stage.Config(out=out, **config), progress=False)
    assert result.summary["models"]["a"]["resumed"] is True and result.summary["models"]["b"]["resumed"] is False
    assert not (tmp_path / "eval.parts").exists()
    reference = tmp_path / "reference"
    eval_stage.run(eval_stage.Config(out=reference, **config), progress=False)
    columns = ["model", "id", "sample_index", "completion", "correct", "num_tokens"]
    assert (read_table(out / "results.parquet", "eval").table.select(columns)
            .equals(read_table(reference / "results.parquet", "eval").table.select(columns)))
    assert result.summary["models"]["a"]["tokens_per_s"] > 0  # generation time of both runs, from the shards


def test_resuming_with_other_settings_stops_naming_the_difference(tmp_path, dataset, tiny_model_dir):
    config = _interrupted_run(tmp_path, dataset, tiny_model_dir)
    with pytest.raises(ValueError, match=r"eval.parts: holds a partial run with other settings "
                                         r"\(settings.max_new_tokens: 6 then, 4 now\)"):
        eval_stage.run(eval_stage.Config(out=tmp_path / "eval", **{**config, "max_new_tokens": 4}), progress=False)
    assert (tmp_path / "eval.parts" / "part-000000.parquet").is_file()  # the finished work is kept


def test_overwrite_discards_a_partial_run_with_other_settings(tmp_path, dataset, tiny_model_dir):
    config = _interrupted_run(tmp_path, dataset, tiny_model_dir)
    out = tmp_path / "eval"
    result = eval_stage.run(eval_stage.Config(out=out, overwrite=True, **{**config, "max_new_tokens": 4}),
                            progress=False)
    assert not any(s["resumed"] for s in result.summary["models"].values())
    assert max(read_table(out / "results.parquet", "eval").table.column("num_tokens").to_pylist()) <= 4
    assert not (tmp_path / "eval.parts").exists()


def test_refcoco_preset_on_converted_grounding_rows(tmp_path):
    from PIL import Image

    Image.new("RGB", (56, 56), (0, 0, 0)).save(tmp_path / "img.png")
    lines = [{"id": f"r{i}", "prompt": "the black square", "image": "img.png", "answer": [0, 0, 28 + i, 28],
              "answer_type": "box", "category": "square"} for i in range(3)]
    src = tmp_path / "refcoco.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    data = tmp_path / "refcoco.parquet"
    prepare_data.run(prepare_data.Config(out=data, input=src, instruction=""))
    out = tmp_path / "eval"
    result = eval_stage.run(eval_stage.Config(dataset=data, models=(TINY,), out=out, preset="refcoco",
                                              max_new_tokens=4), progress=False)
    art = read_table(out / "results.parquet", "eval")
    assert art.reward_names == ["iou_50", "format", "iou"] and result.summary["scorer"] == "iou_50"
    rows = art.table.to_pylist()
    assert len(rows) == 3  # split all: every row of the file, whatever prepare-data assigned
    assert all(r["prompt"] == benchmarks.GROUNDING_REQUEST + "the black square" for r in rows)
    assert all(r["correct"] == (r["reward_iou_50"] == 1.0) for r in rows)
    assert all(not r["correct"] for r in rows if r["reward_iou"] == 0.0)
    s = result.summary["models"]["tiny-qwen2.5-vl"]  # the short label of builtin:tiny-qwen2.5-vl
    assert s["accuracy_by_category"].keys() <= {"square"} and s["category_key"] == "category"
    assert set(s["mean_reward"]) == {"iou_50", "format", "iou"}


def test_clevr_count_preset_evaluates_the_counting_rows_only(tmp_path):
    from PIL import Image

    Image.new("RGB", (56, 56), (0, 0, 0)).save(tmp_path / "img.png")
    lines = [{"id": "q0", "prompt": "How many cubes?", "image": "img.png", "answer": "3"},
             {"id": "q1", "prompt": "Is there a cube?", "image": "img.png", "answer": "yes"},
             {"id": "q2", "prompt": "How many spheres?", "image": "img.png", "answer": "0"}]
    src = tmp_path / "clevr.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    data = tmp_path / "clevr.parquet"
    prepare_data.run(prepare_data.Config(out=data, input=src))
    result = eval_stage.run(eval_stage.Config(dataset=data, models=(TINY,), labels=("m",), out=tmp_path / "eval",
                                              preset="clevr-count", max_new_tokens=4), progress=False)
    rows = read_table(tmp_path / "eval" / "results.parquet", "eval").table.to_pylist()
    assert sorted(r["id"] for r in rows) == ["q0", "q2"] and result.summary["skipped_rows"] == 1
    assert result.summary["models"]["m"]["category_key"] == "answer"
    assert "left out 1 rows" in (tmp_path / "eval" / "report.md").read_text()


def test_cli_eval_prints_the_comparison_and_writes_the_report(tmp_path, dataset):
    from rftcli.cli import app

    out = tmp_path / "eval"
    args = ["eval", "-d", str(dataset), "-m", TINY, "--label", "x", "-m", TINY, "--label", "y", "--samples", "2",
            "--max-new-tokens", "4", "--limit", "2", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "pass@2" in text and "maj@2" in text and f"report: {out / 'report.md'}" in text
    assert (out / "report.md").is_file()
    missing = CliRunner().invoke(app, args[:-1] + [str(tmp_path / "e2"), "--metrics", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "nope.jsonl: no such metrics file" in missing.output
    assert not (tmp_path / "e2").exists() and not (tmp_path / "e2.parts").exists()


def test_a_damaged_later_model_is_named_before_the_first_is_evaluated(tmp_path, dataset, tiny_model_dir):
    """eval loads its models one after another: a damaged second one used to be met after the first had been
    evaluated, leaving `<out>.parts/` behind."""
    import shutil

    from rftcli.cli import app

    damaged = shutil.copytree(tiny_model_dir, tmp_path / "damaged")
    (damaged / "config.json").write_text('{"model_type": ')
    out = tmp_path / "ev"
    result = CliRunner().invoke(app, ["eval", "-d", str(dataset), "-m", str(tiny_model_dir), "-m", str(damaged),
                                      "--out", str(out), "--limit", "2", "--max-new-tokens", "2"])
    assert result.exit_code == 2, result.output
    assert f"{damaged / 'config.json'}: not valid JSON" in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged"]
