"""prepare-data --exclude: evaluation sets whose items no training file holds."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from rftcli.contamination import table_hashes
from rftcli.stages.prepare_data import Config, run

# 56x56 images, at most 2 red squares and no distractors: 1 + 16 + 120 distinct items, so two draws of a
# few hundred rows share many of them unless one excludes the other.
KNOBS = ("image_size=56", "max_count=2", "distractors=0")


def _items(path) -> list[bytes]:
    return table_hashes(pq.read_table(path))


def test_task_draws_again_instead_of_repeating_an_excluded_item(tmp_path):
    train = run(Config(task="counting", num=200, task_options=KNOBS, test_fraction=0.0, out=tmp_path / "train.parquet")).path
    plain = run(Config(task="counting", num=40, seed=7, task_options=KNOBS, out=tmp_path / "plain.parquet")).path
    held = run(Config(task="counting", num=40, seed=7, task_options=KNOBS, exclude=(train,),
                      out=tmp_path / "held.parquet")).path
    seen = set(_items(train))
    assert sum(h in seen for h in _items(plain)) > 10  # the control: without --exclude the draws overlap
    assert pq.read_table(held).num_rows == 40 and not any(h in seen for h in _items(held))
    manifest = json.loads(pq.read_schema(held).metadata[b"rftcli.manifest"])
    assert manifest["excluded"]["files"] == [str(train)] and manifest["excluded"]["items"] == len(seen)


def test_input_rows_holding_an_excluded_item_are_dropped_and_counted(tmp_path):
    train = run(Config(task="counting", num=200, task_options=KNOBS, test_fraction=0.0, out=tmp_path / "train.parquet")).path
    other = run(Config(task="counting", num=60, seed=7, task_options=KNOBS, out=tmp_path / "other.parquet")).path
    seen = set(_items(train))
    overlapping = sum(h in seen for h in _items(other))
    assert overlapping > 0
    result = run(Config(input=other, exclude=(train,), dedupe=False, out=tmp_path / "converted.parquet"))
    assert result.excluded == overlapping
    assert not any(h in seen for h in _items(result.path))


def test_unreadable_exclude_file_is_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet: cannot read it as a dataset for --exclude"):
        run(Config(task="counting", num=10, exclude=(bad,), out=tmp_path / "out.parquet"))
    assert not (tmp_path / "out.parquet").exists()
