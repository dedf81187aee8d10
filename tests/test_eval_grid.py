"""eval over several sets and prompt variants: the direct-answer extraction rule, prompt rewriting, the grid
in results.parquet / summary.json / report.md, resuming by (model, set, prompt, id), and config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rftcli.config import build_config
from rftcli.formats.prompt import INSTRUCTIONS, SYSTEMS
from rftcli.instructions import INSTRUCTION
from rftcli.prompt_variants import parse_variant, strip_instruction
from rftcli.rewards.accuracy import make_accuracy
from rftcli.rewards.text import find_answer
from rftcli.schema import read_table
from rftcli.stages import eval as eval_stage

from .conftest import TINY

# ---------------------------------------------------------------- the direct-answer rule


@pytest.mark.parametrize("completion, kind, expected", [
    ("3", "number", "3"),
    ("There are 3.", "number", "3"),
    ("3 objects, so 3.", "number", "3"),
    ("3 or 4", "number", None),                      # a hedge
    ("2 then 3", "number", None),                    # two numbers
    ("I think 3, maybe 4", "number", None),
    ("abc3def", "number", None),                     # a number inside a word is no number
    ("see CLEVR_val_000003.png", "number", None),
    ("", "number", None),
    ("<think>3</think>", "number", None),            # only while thinking
    ("<think>I see 2 and 5</think> 4", "number", "4"),  # reasoning is not read
    ("<answer>5</answer> or 3", "number", "5"),     # the slot first
    ("<answer>5</answer><answer>6</answer>", "number", None),
    ("\\boxed{7}, not 3", "number", "7"),
    ("B", "choice", "B"),
    ("[1, 2, 3, 4]", "box", "[1, 2, 3, 4]"),
])
def test_whole_mode_takes_one_answer_or_none(completion, kind, expected):
    assert find_answer(completion, "whole", kind) == expected


@pytest.mark.parametrize("completion, answer, answer_type, choices, paid", [
    ("3", "3", "number", None, 1.0),
    ("There are 3.", "3", "number", None, 1.0),
    ("There are three.", "3", "number", None, 1.0),
    ("3 or 4", "3", "number", None, 0.0),
    ("2 then 3", "3", "number", None, 0.0),
    ("three or four", "3", "number", None, 0.0),
    ("x3", "3", "number", None, 0.0),
    ("B", "B", "choice", ["red", "blue"], 1.0),
    ("The answer is (B).", "B", "choice", ["red", "blue"], 1.0),
    ("B or A", "B", "choice", ["red", "blue"], 0.0),
    ("blue", "B", "choice", ["red", "blue"], 1.0),
    ("[0, 0, 10, 10]", "[0, 0, 10, 10]", "box", None, 1.0),
    ("[0, 0, 10, 10] or [20, 20, 30, 30]", "[0, 0, 10, 10]", "box", None, 0.0),
])
def test_accuracy_under_the_direct_answer_rule(completion, answer, answer_type, choices, paid):
    whole = make_accuracy("whole", name="accuracy")
    assert whole([completion], answer=[answer], answer_type=[answer_type], choices=[choices]) == [paid]


# ---------------------------------------------------------------- prompt variants

def test_variants_rewrite_the_instruction():
    row = {"prompt": f"How many cubes?\n{INSTRUCTION}", "answer_type": "number", "system": SYSTEMS["think"]}
    direct = parse_variant("direct").apply(row)
    assert direct["prompt"] == "How many cubes? Answer with a single number." and direct["system"] is None
    think = parse_variant("think").apply({**row, "prompt": f"How many cubes? {INSTRUCTIONS['boxed']}"})
    assert think["prompt"] == f"How many cubes? {INSTRUCTION}" and think["system"] == SYSTEMS["think"]
    mine = parse_variant("short=Q: {question} Reply briefly.").apply(row)
    assert mine["prompt"] == "Q: How many cubes? Reply briefly."
    r1v = "How many? Output the thinking process in <think> </think> and final answer (number) in <answer> </answer> tags."
    assert strip_instruction(r1v) == "How many?"
    assert strip_instruction("Is 4.5 > 3?") == "Is 4.5 > 3?"
    assert parse_variant("dataset").apply(row) == row


@pytest.mark.parametrize("spec, message", [
    ("bogus", "unknown prompt variant 'bogus': built-in dataset, direct, think, or NAME=TEXT"),
    ("direct=Say it.", "direct is built in"),
    ("a b=x", "needs a name of letters"),
])
def test_bad_variants_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_variant(spec)


# ---------------------------------------------------------------- the grid end to end

@pytest.fixture(scope="module")
def second_set(tmp_path_factory) -> Path:
    from rftcli.stages import prepare_data

    out = tmp_path_factory.mktemp("data2") / "compare.parquet"
    prepare_data.run(prepare_data.Config(out=out, task="comparison", num=16, test_fraction=0.5))
    return out


def test_grid_of_two_models_two_sets_two_prompts(tmp_path, dataset, second_set, tiny_model_dir):
    from rftcli.cli import app

    out = tmp_path / "eval"
    args = ["eval", "-d", str(dataset), "--set-label", "in-dist", "-d", str(second_set), "--set-label", "ood",
            "--prompt", "dataset", "--prompt", "direct", "-m", TINY, "--label", "a", "-m", str(tiny_model_dir),
            "--label", "b", "--limit", "2", "--max-new-tokens", "4", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "accuracy by set / prompt" in text and "in-dist / direct" in text and "ood / dataset" in text
    assert "evaluated rows seen in training (set ood): a 0 (no record)" in text

    art = read_table(out / "results.parquet", "eval")
    rows = art.table.to_pylist()
    assert len(rows) == 2 * 2 * 2 * 2
    cells = {(r["model"], r["set"], r["prompt_variant"]) for r in rows}
    assert cells == {(m, s, p) for m in "ab" for s in ("in-dist", "ood") for p in ("dataset", "direct")}
    for r in rows:
        if r["prompt_variant"] == "direct":
            assert "<think>" not in r["prompt"] and INSTRUCTION not in r["prompt"] and "<think>" not in (r["system"] or "")
            assert r["prompt"].endswith({"number": "Answer with a single number.",
                                         "choice": "Answer with the option's letter."}[r["answer_type"]])
        else:
            assert INSTRUCTION in r["prompt"]
    assert {r["answer_type"] for r in rows if r["set"] == "ood"} == {"choice"}

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["sets"]) == ["in-dist", "ood"] and summary["sets"]["ood"]["rows"] == 2
    assert summary["sets"]["ood"]["path"] == str(second_set)
    assert summary["prompts"]["direct"]["rule"] == "whole" and summary["prompts"]["dataset"]["rule"] == "strict"
    assert len(summary["grid"]) == 8
    for c in summary["grid"]:
        mine = [r for r in rows if (r["model"], r["set"], r["prompt_variant"]) == (c["model"], c["set"], c["prompt"])]
        assert c["rows"] == len(mine) == 2
        assert c["accuracy"] == pytest.approx(sum(r["correct"] for r in mine) / 2)
        assert c["rule"] == ("whole" if c["prompt"] == "direct" else "strict")
        assert c["contamination"]["unseen_rows"] == 2 and c["contamination"]["trained_rows"] == 0
        assert {"format_rate", "truncation_rate", "mean_length", "accuracy_lenient"} <= set(c)
    # `models` stays the first set under the first prompt, as scripts read it
    first = [r for r in rows if r["model"] == "a" and r["set"] == "in-dist" and r["prompt_variant"] == "dataset"]
    assert summary["models"]["a"]["rows"] == 2
    assert summary["models"]["a"]["accuracy"] == pytest.approx(sum(r["correct"] for r in first) / 2)
    assert summary["dataset"] == str(dataset)

    report = (out / "report.md").read_text()
    assert "## Sets and prompts" in report and "| model | in-dist / dataset | in-dist / direct | ood / dataset |" in report
    assert "![accuracy by set and prompt](grid.png)" in report
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


INTERRUPTING = """from pathlib import Path

FLAG = Path(__file__).with_name("interrupt-after")


def parity(completions, **kw):
    if FLAG.exists():
        left = int(FLAG.read_text())
        if left == 0:
            FLAG.unlink()
            raise KeyboardInterrupt
        FLAG.write_text(str(left - 1))
    return [float(len(c) % 2 == 0) for c in completions]
"""


def test_a_killed_grid_resumes_by_model_set_prompt_and_id(tmp_path, dataset, second_set):
    scorer = tmp_path / "scorer.py"
    scorer.write_text(INTERRUPTING)
    (tmp_path / "interrupt-after").write_text("3")  # three (set, prompt) batches of model a, then Ctrl-C
    config = dict(dataset=(dataset, second_set), models=(TINY,), labels=("a",), prompts=("dataset", "think"),
                  max_new_tokens=4, limit=2, batch_size=2, scorer=f"{scorer}:parity")
    with pytest.raises(KeyboardInterrupt):
        eval_stage.run(eval_stage.Config(out=tmp_path / "eval", **config), progress=False)
    assert len(list((tmp_path / "eval.parts").glob("part-*.parquet"))) == 3
    result = eval_stage.run(eval_stage.Config(out=tmp_path / "eval", **config), progress=False)
    resumed = {(c["set"], c["prompt"]): c["resumed"] for c in result.summary["grid"]}
    assert resumed == {("counting", "dataset"): True, ("counting", "think"): True, ("compare", "dataset"): True,
                       ("compare", "think"): False}
    assert result.summary["grid"][0]["rule"] == "strict"
    assert read_table(tmp_path / "eval" / "results.parquet", "eval").table.num_rows == 2 * 2 * 2


def test_grid_config_from_yaml_and_its_errors(tmp_path, dataset):
    from rftcli.cli import app

    recipe = tmp_path / "eval.yaml"
    recipe.write_text("dataset: [a.parquet, b.parquet]\nset_labels: [in-dist, ood]\nprompts: [dataset, direct]\n"
                      "models: [m]\nout: o\n")
    cfg = build_config(eval_stage.Config, recipe)
    assert cfg.dataset == (Path("a.parquet"), Path("b.parquet")) and cfg.set_names == ["in-dist", "ood"]
    assert cfg.prompts == ("dataset", "direct")
    one = tmp_path / "one.yaml"
    one.write_text("dataset: a.parquet\nmodels: m\nout: o\n")
    assert build_config(eval_stage.Config, one).set_names == ["a"] and build_config(eval_stage.Config, one).prompts == ("dataset",)

    base = ["eval", "-d", str(dataset), "-d", str(dataset), "-m", TINY, "--out", str(tmp_path / "e")]
    for extra, message in [(["--set-label", "x"], "error: got 1 set labels for 2 datasets"),
                           ([], "error: set labels must be unique, got counting, counting; pass --set-label"),
                           (["--set-label", "x", "--set-label", "y", "--prompt", "bogus"],
                            "error: unknown prompt variant 'bogus'")]:
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 2, result.output
        assert result.output.strip().startswith(message) and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "e").exists() and not (tmp_path / "e.parts").exists()


def test_direct_prompts_swap_built_in_scorers_only(tmp_path):
    import json as _json

    from rftcli.eval_grid import rule_rewards
    from rftcli.rewards.combine import load_rewards

    direct, dataset_ = parse_variant("direct"), parse_variant("dataset")
    for spec, paid in [("accuracy", [1.0, 0.0]), ("count", [1.0, 0.0]), ("rftcli.benchmarks:precision_accuracy", [1.0, 0.0])]:
        rewards, rule = rule_rewards(load_rewards([spec, "format"]), direct)
        assert rule == "whole" and [r.name for r in rewards][1] == "format"
        got = rewards[0].fn(["There are 3.", "3 or 4"], answer=["3", "3"], answer_type=["number"] * 2,
                            choices=[None, None], metadata=[_json.dumps({"precision": 0})] * 2)
        assert got == paid, spec
        assert rule_rewards(load_rewards([spec]), dataset_)[1] == "strict"
    own = tmp_path / "mine.py"
    own.write_text("def accuracy(completions, **kw):\n    return [1.0 for _ in completions]\n")
    assert rule_rewards(load_rewards([f"{own}:accuracy"]), direct)[1] == "own (accuracy)"
