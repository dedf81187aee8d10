"""One set of row checks wherever a table is read, checked before any model is built, on the rows a stage uses.

- A list `answer` in prepare-data's input follows one rule (the vqa, ocrbench and chartqa layouts' one): the
  first accepted answer is `answer`, all of them go to metadata.answers; a list of lists is refused.
- A blank `prompt` or `answer` ('' or only spaces) is refused by every stage that reads a table, as
  prepare-data refuses it; the line names file, row and column.
- train-grpo refuses a bad table before it builds or loads a model (no model-building line, seconds).
- Images are decoded for the rows a stage uses only (`--split`, `--limit`, sft's filter), and a bad one is
  named by its row in the file.
- A named pipe given as an image says what it is; sft-coldstart's row without a target names the file.

Refusals end as everywhere in tests/reliability: exit 2, one `error:` line, the input unchanged, nothing
written (`refused` and `prepare_refused` check it).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rftcli.cli import app
from tests.reliability import test_bad_inputs
from tests.reliability.test_bad_inputs import STAGES, _png, _png_with_idat, _set, _writer, refused

runner = CliRunner()
tables = test_bad_inputs.tables  # the fixture: a valid table of each kind
TABLE_STAGES = sorted(STAGES)


def _raw(tmp_path: Path, rows: list[dict]) -> Path:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    return src


def _prepare(src: Path, out: Path, *extra: str):
    return runner.invoke(app, ["prepare-data", "--input", str(src), "--out", str(out), "--instruction", "none",
                               *extra])


def _one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


# ---------------------------------------------------------------- 1. a list answer: one rule

def test_a_list_of_accepted_answers_keeps_the_first_and_all_of_them_in_metadata(tmp_path):
    src = _raw(tmp_path, [{"question": "Which digit?", "answer": ["0", "alt"]},
                          {"question": "How many?", "answer": ["3", "three", " "]},
                          {"question": "One?", "answer": ["7"]}])
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(json.dumps({"question": "How many?", "answer": [3, "three"]}) + "\n")
    for source, expected in [(src, [("0", ["0", "alt"]), ("3", ["3", "three"]), ("7", None)]),
                             (jsonl, [("3", ["3", "three"])])]:
        out = tmp_path / f"{source.suffix[1:]}.parquet"
        result = _prepare(source, out)
        assert result.exit_code == 0, result.output
        rows = pq.read_table(out).to_pylist()
        assert [(r["answer"], json.loads(r["metadata"] or "{}").get("answers")) for r in rows] == expected
        assert {r["answer_type"] for r in rows} == {"number"}


def test_a_list_answer_of_four_numbers_stays_a_box(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 40), (0, 0, 0)).save(tmp_path / "a.png")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "Where?", "image": "a.png", "answer": [1, 2, 30, 20]}) + "\n")
    result = _prepare(src, tmp_path / "data.parquet")
    assert result.exit_code == 0, result.output
    row = pq.read_table(tmp_path / "data.parquet").to_pylist()[0]
    assert (row["answer"], row["answer_type"]) == ("[1, 2, 30, 20]", "box") and "answers" not in (row["metadata"] or "")


@pytest.mark.parametrize("answer", [[["0"], ["alt"]], [{"a": 1}, "b"], ["yes", True]])
def test_a_list_answer_holding_lists_or_objects_is_refused_naming_the_row(answer, tmp_path):
    rows = [{"question": "Fine?", "answer": "1"}, {"question": "Which?", "answer": answer}]
    if all(isinstance(a, list) for a in answer):  # a Parquet column holds one type: the bad row alone
        src, where = _raw(tmp_path, rows[1:]), "row 0"
    else:
        src, where = tmp_path / "in.jsonl", "line 2"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    line = _one_error_line(_prepare(src, tmp_path / "data.parquet"))
    assert f"{src}: {where}" in line and "column 'answer'" in line and "list of accepted answers" in line, line
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


# ---------------------------------------------------------------- 2. blank text: every stage

@pytest.mark.parametrize(("column", "value"), [("prompt", ""), ("answer", "   \t")])
@pytest.mark.parametrize("stage", TABLE_STAGES)
def test_blank_text_is_refused_by_every_stage_that_reads_a_table(stage, column, value, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    table = tables[kind]
    values = table.column(column).to_pylist()
    values[3] = value
    line = refused(args, tiny_model_dir, _writer(_set(table, column, values)), f"row 3, column {column!r}")
    assert "blank" in line


def test_prepare_data_refuses_a_blank_prompt_as_the_stages_do(tmp_path):
    src = _raw(tmp_path, [{"prompt": "Fine?", "answer": "1"}, {"prompt": "   ", "answer": "2"}])
    line = _one_error_line(_prepare(src, tmp_path / "data.parquet"))
    assert f"{src}: row 1" in line and "column 'prompt'" in line, line
    # A blank task is no task: the layout's default, so the table it writes passes the stages' checks.
    src = _raw(tmp_path, [{"prompt": "Fine?", "answer": "1", "task": "  "}])
    assert _prepare(src, tmp_path / "data.parquet").exit_code == 0
    assert pq.read_table(tmp_path / "data.parquet").column("task").to_pylist() == ["custom"]


# ---------------------------------------------------------------- 4. train-grpo checks before any model

@pytest.mark.parametrize("mode", ["online", "offline"])
def test_train_grpo_refuses_a_bad_table_before_building_a_model(mode, tables, tmp_path, monkeypatch):
    """In a child process, as a user runs it: one line, and nothing of the model's building (its progress line)."""
    kind = "dataset" if mode == "online" else "scores"
    table = tables[kind]
    prompts = table.column("prompt").to_pylist()
    prompts[2] = " "
    bad = tmp_path / "bad.parquet"
    pq.write_table(_set(table, "prompt", prompts), bad)
    flag = "-d" if mode == "online" else "--rollouts"
    child = subprocess.run([sys.executable, "-m", "rftcli", "train-grpo", flag, str(bad), "-m",
                            "builtin:small-qwen2.5-vl", "--out", str(tmp_path / "out"), "--split", "all"],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    output = (child.stdout + child.stderr).strip()
    assert child.returncode == 2, output[-3000:]
    assert output == f"error: {bad}: row 2, column 'prompt': blank (empty or only whitespace)", output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]

    # In process: the model is neither built nor loaded before the table is refused.
    from rftcli.stages import train_grpo

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built or loaded before the input was checked")

    monkeypatch.setattr(train_grpo, "build_builtins", no_model)
    monkeypatch.setattr(train_grpo, "_load", no_model)
    source = {"dataset": bad} if mode == "online" else {"rollouts": bad}
    with pytest.raises(ValueError, match="row 2, column 'prompt': blank"):
        train_grpo.run(train_grpo.Config(**source, model="builtin:tiny-qwen2.5-vl", out=tmp_path / "out2",
                                         split="all"))


# ---------------------------------------------------------------- 4. images: the rows used only

def _damaged(table: pa.Table, rows: list[int]) -> pa.Table:
    images = table.column("images").to_pylist()
    for row in rows:
        images[row] = [{"bytes": _png_with_idat(_png(row), b"not zlib data at all"), "path": None}]
    return _set(table, "images", images)


def test_rollout_decodes_the_images_of_the_rows_it_uses_only(tables, tiny_model_dir, tmp_path):
    """A damaged image past --limit, or in another split, stops nothing; one in a row used is named by its row
    in the file, not by its place in the split."""
    table = tables["dataset"]
    splits = table.column("split").to_pylist()
    test_rows = [i for i, s in enumerate(splits) if s == "test"]
    train_rows = [i for i, s in enumerate(splits) if s == "train"]
    bad = tmp_path / "data.parquet"
    pq.write_table(_damaged(table, [*test_rows, *train_rows[2:]]), bad)
    args = ["rollout", "-d", str(bad), "-m", str(tiny_model_dir), "-n", "2", "--max-new-tokens", "2"]
    result = runner.invoke(app, [*args, "--limit", "2", "--out", str(tmp_path / "r.parquet")])
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 4

    line = refused(lambda i, m, o: [*args[:2], i, *args[3:], "--limit", "3", "--out", o + ".parquet"], tiny_model_dir,
                   lambda path: pq.write_table(pq.read_table(bad), path), f"row {train_rows[2]}, column 'images'")
    assert "not a readable image" in line
    line = refused(lambda i, m, o: [*args[:2], i, *args[3:], "--split", "test", "--limit", "1", "--out",
                                    o + ".parquet"], tiny_model_dir,
                   lambda path: pq.write_table(pq.read_table(bad), path), f"row {test_rows[0]}, column 'images'")


def test_every_stage_checks_the_images_of_its_rows_only(tables, tmp_path):
    """The functions the other stages read their rows with: eval and train-grpo (used_rows), sft-coldstart
    (sft_rows, after its filter), offline train-grpo (load_offline, groups up to --limit)."""
    from rftcli.offline_grpo import load_offline
    from rftcli.stages.rollout import used_rows
    from rftcli.stages.sft_coldstart import sft_rows

    data = tmp_path / "data.parquet"
    pq.write_table(_damaged(tables["dataset"], list(range(3, tables["dataset"].num_rows))), data)
    assert used_rows(data, "all", 3).num_rows == 3
    with pytest.raises(ValueError, match=f"{data}: row 3, column 'images'"):
        used_rows(data, "all", 4)
    assert sft_rows(data, "all", limit=3)[0].num_rows == 3
    with pytest.raises(ValueError, match=f"{data}: row 3, column 'images'"):
        sft_rows(data, "all")

    scores = tables["scores"]
    first_group = scores.column("group_index").to_pylist().count(scores.column("group_index")[0].as_py())
    path = tmp_path / "scores.parquet"
    pq.write_table(_damaged(scores, list(range(first_group, scores.num_rows))), path)
    hash_ = scores.column("policy_hash")[0].as_py()
    settings = {"split": "all", "scale_rewards": "group", "dynamic_sampling": False, "rewards": None,
                "policy_hash": hash_, "allow_policy_mismatch": False}
    assert load_offline(path, limit=1, **settings).groups == 1
    with pytest.raises(ValueError, match=f"{path}: row {first_group}, column 'images'"):
        load_offline(path, limit=2, **settings)


# ---------------------------------------------------------------- 5. smaller

def test_a_named_pipe_given_as_an_image_says_what_it_is(tmp_path):
    (tmp_path / "imgs").mkdir()
    os.mkfifo(tmp_path / "imgs" / "pipe.png")
    (tmp_path / "imgs" / "dir.png").mkdir()
    src = tmp_path / "in.jsonl"
    for name, kind in [("pipe.png", "a named pipe (FIFO)"), ("dir.png", "a folder")]:
        src.write_text(json.dumps({"prompt": "How many?", "answer": "1", "image": f"imgs/{name}"}) + "\n")
        line = _one_error_line(_prepare(src, tmp_path / "data.parquet"))
        assert f"{src}: line 1" in line and "column 'images'" in line and f"is {kind}, not a file" in line, line
        assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "in.jsonl"]


def test_sft_row_without_a_target_names_the_file_and_row(tables, tiny_model_dir):
    kind, args = STAGES["sft-coldstart"]
    table = tables[kind]
    empty = [None if i == 5 else v for i, v in enumerate(table.column("reasoning").to_pylist())]
    none = pa.nulls(table.num_rows, pa.string()).to_pylist()
    bad = _set(_set(table, "reasoning", empty), "response", none)
    refused(args, tiny_model_dir, _writer(bad), "row 5, column 'response': neither response nor reasoning")


# ---------------------------------------------------------------- a small input's empty split

def test_an_empty_split_names_the_splits_the_table_holds(tmp_path):
    # Twelve rows at the default --test-fraction 0.1 can hash none into test; eval's default split is test.
    src = _raw(tmp_path, [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(12)])
    data = tmp_path / "data.parquet"
    assert _prepare(src, data).exit_code == 0
    held = pq.read_table(data).column("split").to_pylist()
    for stage in (["rollout", "-n", "2"], ["eval"]):
        missing = next(s for s in ("test", "val", "train") if s not in held)
        out = tmp_path / f"{stage[0]}-out"
        line = _one_error_line(runner.invoke(app, [*stage, "-d", str(data), "-m", "builtin:tiny-qwen2.5-vl",
                                                   "--split", missing, "--out", str(out)]))
        assert f"no rows in split '{missing}'" in line and f"train {held.count('train')}" in line, line
        assert "--split" in line and not out.exists()
