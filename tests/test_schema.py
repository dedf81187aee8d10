"""The artifact contract: schemas, metadata, validation messages, atomic writes."""

from __future__ import annotations

import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rftcli.atomic import OutputExistsError, atomic_output
from rftcli.schema import (
    MANIFEST_KEY,
    SCHEMA_KEY,
    ArtifactError,
    TableWriter,
    read_table,
    schema_for,
    write_table,
)


def _png(color=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (28, 28), color).save(buf, format="PNG")
    return buf.getvalue()


def dataset_row(i: int = 0, **over) -> dict:
    row = dict(id=f"r{i}", split="train", task="counting", system=None, prompt="How many?",
               images=[{"bytes": _png(), "path": None}], answer="3", answer_type="number", choices=None,
               reasoning=None, response=None, metadata=json.dumps({"k": i}))
    row.update(over)
    return row


def test_roundtrip_keeps_rows_manifest_and_schema_tag(tmp_path):
    path = tmp_path / "d.parquet"
    write_table(path, "dataset", [dataset_row(0), dataset_row(1)], {"stage": "test", "seed": 3})
    art = read_table(path, "dataset")
    assert art.kind == "dataset"
    assert art.manifest == {"stage": "test", "seed": 3}
    assert art.table.column("id").to_pylist() == ["r0", "r1"]
    meta = pq.read_schema(path).metadata
    assert meta[SCHEMA_KEY] == b"dataset/1"
    assert json.loads(meta[MANIFEST_KEY])["stage"] == "test"
    assert [p.name for p in tmp_path.iterdir()] == ["d.parquet"]  # no temporary left behind


def test_every_tool_opens_it_and_datasets_decodes_images(tmp_path):
    import datasets
    import duckdb
    import pandas as pd
    import polars as pl

    path = tmp_path / "d.parquet"
    write_table(path, "dataset", [dataset_row(0), dataset_row(1)], {"stage": "test"})
    assert list(pd.read_parquet(path)["answer"]) == ["3", "3"]
    assert duckdb.sql(f"select count(*), sum(len(images)) from '{path}'").fetchall() == [(2, 2)]
    assert pl.read_parquet(path)["id"].to_list() == ["r0", "r1"]
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    img = ds[0]["images"][0]
    assert isinstance(img, Image.Image) and img.size == (28, 28)


def test_scores_schema_has_reward_columns(tmp_path):
    schema = schema_for("scores", ["accuracy", "format"])
    assert schema.field("reward_accuracy").type == pa.float64()
    assert schema.names[-3:] == ["reward", "reward_accuracy", "reward_format"]
    with pytest.raises(ValueError):
        schema_for("dataset", ["accuracy"])


def test_wrong_kind_is_named(tmp_path):
    path = tmp_path / "d.parquet"
    write_table(path, "dataset", [dataset_row()], {})
    with pytest.raises(ArtifactError, match=r"d.parquet: is a dataset table, expected rollouts"):
        read_table(path, "rollouts")


def test_older_schema_version_fails_cleanly(tmp_path):
    path = tmp_path / "old.parquet"
    write_table(path, "dataset", [dataset_row()], {})
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[SCHEMA_KEY] = b"dataset/0"
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(ArtifactError, match=r"old.parquet: dataset schema version 0 is not the version 1"):
        read_table(path, "dataset")


def test_plain_parquet_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}), path)
    with pytest.raises(ArtifactError, match=r"raw.parquet: not an rftcli dataset table .*prepare-data"):
        read_table(path, "dataset")


def test_missing_column_and_wrong_type_are_named(tmp_path):
    path = tmp_path / "d.parquet"
    write_table(path, "dataset", [dataset_row()], {})
    table = pq.read_table(path)
    meta = table.schema.metadata
    pq.write_table(table.drop_columns(["answer"]).replace_schema_metadata(meta), tmp_path / "a.parquet")
    with pytest.raises(ArtifactError, match=r"a.parquet: column 'answer' is missing"):
        read_table(tmp_path / "a.parquet", "dataset")
    bad = table.set_column(table.schema.get_field_index("images"), "images", pa.array([7], pa.int64()))
    pq.write_table(bad.replace_schema_metadata(meta), tmp_path / "b.parquet")
    with pytest.raises(ArtifactError, match=r"b.parquet: column 'images': expected list<"):
        read_table(tmp_path / "b.parquet", "dataset")


def test_missing_required_value_names_row_and_column_and_writes_nothing(tmp_path):
    path = tmp_path / "d.parquet"
    rows = [dataset_row(0), dataset_row(1, answer=None)]
    with pytest.raises(ArtifactError, match=r"d.parquet: row 1, column 'answer': missing value"):
        write_table(path, "dataset", rows, {})
    assert list(tmp_path.iterdir()) == []


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ArtifactError, match=r"x.parquet: not a readable Parquet file"):
        read_table(path, "dataset")


def test_existing_output_needs_overwrite(tmp_path):
    path = tmp_path / "d.parquet"
    write_table(path, "dataset", [dataset_row(0)], {})
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_table(path, "dataset", [dataset_row(1)], {})
    write_table(path, "dataset", [dataset_row(1)], {}, overwrite=True)
    assert read_table(path, "dataset").table.column("id").to_pylist() == ["r1"]


def test_interrupted_writer_leaves_old_output_untouched(tmp_path):
    path = tmp_path / "d.parquet"
    write_table(path, "dataset", [dataset_row(0)], {})
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with TableWriter(path, "dataset", {}, overwrite=True) as w:
            w.write_rows([dataset_row(5)])
            raise RuntimeError("killed")
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["d.parquet"]


def test_atomic_directory_replaces_whole_folder(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_output(target, directory=True) as tmp:
        (tmp / "a.txt").write_text("1")
    with atomic_output(target, overwrite=True, directory=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
