"""Held-out splits: built-in tasks disjoint by content, published splits kept (--split-from), cross-split
duplicates reported and dropped on request."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from rftcli.cli import app
from rftcli.formats import split_name
from rftcli.schema import inspect_file, read_table
from rftcli.stages.prepare_data import Config, assign_split, run

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny"


def png(color, size=(28, 28)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def item(row: dict) -> tuple:
    """A row's content as the issue defines it, computed here independently of rftcli."""
    return (row["prompt"], row["answer"], tuple(hashlib.sha256(i["bytes"]).hexdigest() for i in row["images"]))


def rows_of(path: Path) -> list[dict]:
    return read_table(path, "dataset").table.to_pylist()


def summary(args: list[str]) -> str:
    result = CliRunner().invoke(app, ["prepare-data", *args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())


# ---------------------------------------------------------------- built-in tasks

def test_tiny_recipe_test_split_shares_no_item_with_train(tmp_path):
    settings = yaml.safe_load((RECIPE / "data.yaml").read_text())
    out = tmp_path / "data.parquet"
    text = summary(["--config", str(RECIPE / "data.yaml"), "--out", str(out)])
    assert "splits from task (disjoint by content) 4000" in text and "cross-split duplicates 0" in text
    rows = rows_of(out)
    by_split: dict[str, set] = {}
    for r in rows:
        by_split.setdefault(r["split"], set()).add(item(r))
    sizes = {s: sum(r["split"] == s for r in rows) for s in by_split}
    assert sizes == {"train": 3589, "test": 411} and len(rows) == settings["num"]
    assert by_split["train"] & by_split["test"] == set()
    # the split is still that of the row's id hash, so the sizes follow --test-fraction
    assert all(r["split"] == assign_split(r["id"], 0.1, 0.0) for r in rows)
    assert inspect_file(out, ("dataset",))[1]["splits"]["cross_split_duplicates"] == {}


@pytest.mark.parametrize("task", ["counting", "comparison", "arithmetic", "grounding"])
def test_every_task_draws_disjoint_splits(tmp_path, task):
    out = tmp_path / "d.parquet"
    run(Config(out=out, task=task, num=300, test_fraction=0.2, val_fraction=0.1, seed=3))
    splits: dict[str, set] = {}
    for r in rows_of(out):
        splits.setdefault(r["split"], set()).add(item(r))
    assert set(splits) == {"train", "val", "test"}
    assert not (splits["train"] & splits["test"] or splits["train"] & splits["val"] or splits["val"] & splits["test"])


def test_a_task_too_small_for_disjoint_splits_says_so(tmp_path):
    # no squares at all: one item, which train or test takes first; the other split can never be drawn
    result = CliRunner().invoke(app, ["prepare-data", "--task", "counting", "--num", "100", "--task-option",
                                      "max_count=0", "--task-option", "distractors=0", "--test-fraction", "0.5",
                                      "--out", str(tmp_path / "d.parquet")])
    assert result.exit_code == 2 and "too few distinct items" in result.output
    assert not (tmp_path / "d.parquet").exists()


# ---------------------------------------------------------------- published splits

def _hub_snapshot(tmp_path: Path, n_test: int = 20) -> Path:
    data = tmp_path / "snap" / "data"
    data.mkdir(parents=True)
    schema = pa.schema([("question", pa.string()), ("answer", pa.string()),
                        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))])
    for split, n, color in (("test", n_test, (20, 40, 220)), ("train", 30, (220, 20, 20))):
        rows = [{"question": f"{split} question {i}?", "answer": str(i), "image": {"bytes": png(color), "path": None}}
                for i in range(n)]
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), data / f"{split}-00000-of-00001.parquet")
    return tmp_path / "snap"


def test_hub_snapshot_train_and_test_files_keep_their_splits(tmp_path):
    snap = _hub_snapshot(tmp_path)
    out = tmp_path / "d.parquet"
    text = summary(["--input", str(snap), "--out", str(out)])
    rows = rows_of(out)
    assert {r["split"] for r in rows if r["prompt"].startswith("train")} == {"train"}
    assert {r["split"] for r in rows if r["prompt"].startswith("test")} == {"test"}
    assert "rows 50 train 30 test 20 splits from source 50" in text
    # files are read train first, whatever their names sort to
    assert rows[0]["prompt"].startswith("train") and json.loads(rows[-1]["metadata"])["source_split"] == "test"
    # hash: every row by id; the source's test rows that land in train are counted
    hashed = run(Config(out=out, input=snap, split_from="hash", overwrite=True))
    moved = sum(1 for r in rows_of(out) if r["prompt"].startswith("test") and r["split"] == "train")
    assert hashed.split_sources == {"id hash": 50} and hashed.source_test_in_train == moved > 0
    text = summary(["--input", str(snap), "--split-from", "hash", "--out", str(out), "--overwrite"])
    assert f"source test rows in train {moved} (--split-from hash)" in text


def test_intergps_clevr_mathvista_and_split_column(tmp_path):
    root = tmp_path / "geometry3k"
    for split, pid in (("train", 1), ("val", 2101), ("test", 2401)):
        folder = root / split / str(pid)
        folder.mkdir(parents=True)
        (folder / "img_diagram.png").write_bytes(png((pid % 200, 0, 0)))
        (folder / "data.json").write_text(json.dumps({
            "id": pid, "problem_text": "Find x.", "choices": ["3", "6"], "answer": "B",
            "problem_type_goal": ["Length"]}))
    assert {r["id"]: r["split"] for r in rows_of(_convert(tmp_path, root))} == {
        "1": "train", "2101": "val", "2401": "test"}

    questions = tmp_path / "CLEVR_val_questions.json"
    (tmp_path / "CLEVR_val_000000.png").write_bytes(png((1, 2, 3)))
    questions.write_text(json.dumps({"info": {}, "questions": [
        {"image_index": 0, "image_filename": "CLEVR_val_000000.png", "question": "How many?", "answer": "2",
         "question_family_index": 1, "question_index": 0}]}))  # no per-question split: the file name's
    assert [r["split"] for r in rows_of(_convert(tmp_path, questions))] == ["val"]

    testmini = tmp_path / "testmini.json"  # MathVista's GitHub release: {pid: record}
    (tmp_path / "1.png").write_bytes(png((5, 5, 5)))
    testmini.write_text(json.dumps({"1": {"pid": "1", "question": "How many bars?", "image": "1.png", "choices": None,
                                          "answer": "4", "question_type": "free_form", "answer_type": "integer",
                                          "precision": None, "unit": None, "metadata": {"task": "figure QA"}}}))
    assert [r["split"] for r in rows_of(_convert(tmp_path, testmini))] == ["test"]

    column = tmp_path / "rows.jsonl"  # a `split` column, as published names spell it
    column.write_text("\n".join(json.dumps({"id": f"r{i}", "prompt": f"q{i}?", "answer": str(i), "split": s})
                                for i, s in enumerate(["train", "validation", "testmini", "dev", "test"])) + "\n")
    assert [r["split"] for r in rows_of(_convert(tmp_path, column))] == ["train", "val", "test", "val", "test"]


def _convert(tmp_path: Path, src: Path, **kw) -> Path:
    out = tmp_path / "out.parquet"
    run(Config(out=out, input=src, overwrite=True, instruction="none", **kw))
    return out


def test_split_names_and_an_unknown_one(tmp_path):
    assert [split_name(s) for s in ("train", "trainval", "validation", "dev", "test", "testA", "testmini")] == [
        "train", "train", "val", "val", "test", "test", "test"]
    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps({"id": "a", "prompt": "q?", "answer": "1", "split": "extra"}) + "\n")
    result = CliRunner().invoke(app, ["prepare-data", "--input", str(src), "--out", str(tmp_path / "d.parquet")])
    assert result.exit_code == 2 and not (tmp_path / "d.parquet").exists()
    assert result.output.count("error:") == 1
    assert "rows.jsonl: line 1, column 'split': source split 'extra' is none of train" in " ".join(result.output.split())
    assert "--split-from hash" in result.output
    out = _convert(tmp_path, src, split_from="hash")
    assert [r["split"] for r in rows_of(out)] == [assign_split("a", 0.1, 0.0)]


# ---------------------------------------------------------------- cross-split duplicates

def test_cross_split_duplicates_are_reported_and_dropped_from_the_later_split(tmp_path):
    (tmp_path / "a.png").write_bytes(png((220, 20, 20)))
    (tmp_path / "b.png").write_bytes(png((20, 40, 220)))
    lines = [  # the test copy comes first in the file; the later split is still test
        {"id": "t1", "prompt": "Color?", "image": "a.png", "answer": "red", "split": "test"},
        {"id": "t2", "prompt": "Color?", "image": "b.png", "answer": "blue", "split": "test"},
        {"id": "v1", "prompt": "Color?", "image": "b.png", "answer": "blue", "split": "val"},
        {"id": "r1", "prompt": "Color?", "image": "a.png", "answer": "red", "split": "train",
         "system": "Be brief."},  # another system prompt: not a duplicate for dedupe, the same item
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "d.parquet"
    text = summary(["--input", str(src), "--out", str(out)])
    assert "cross-split duplicates test repeats train 1, test repeats val 1" in text
    assert [r["id"] for r in rows_of(out)] == ["t1", "t2", "v1", "r1"]
    report = inspect_file(out, ("dataset",))[1]["splits"]
    assert report["cross_split_duplicates"] == {"test~train": 1, "test~val": 1}
    assert (report["rows"], report["from"]) == ({"test": 2, "val": 1, "train": 1}, {"source": 4})

    text = summary(["--input", str(src), "--out", str(out), "--overwrite", "--drop-cross-split-duplicates"])
    assert "(2 dropped)" in text and [r["id"] for r in rows_of(out)] == ["v1", "r1"]
    assert inspect_file(out, ("dataset",))[1]["splits"]["cross_split_dropped"] == 2
    assert not list(tmp_path.glob(".d.parquet*"))  # no scratch file left behind
