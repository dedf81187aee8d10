"""The splits of the `dataset` table: each row's split, and the rows of a later split that repeat an earlier
split's content.

    row_split     a built-in task's split, the source's own (`--split-from source`, mapped onto train, val
                  and test by `rftcli.formats.split_name`), or `assign_split`: a hash of the row's id, the
                  same whatever the order, machine or run.
    cross-split   prepare-data writes every row to a scratch file (`scratch_schema`: the dataset's columns,
                  the row's content hash and where its split came from); once every split is known,
                  `cross_split` counts rows of a later split (train, then val, then test) whose content equals
                  an earlier split's, per pair, and marks them to drop with --drop-cross-split-duplicates;
                  `copy_out` copies the kept rows into the output.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from rftcli.formats import BadRow, Record, split_name
from rftcli.schema import TableWriter

SPLITS = ("train", "val", "test")


def assign_split(row_id: str, test_fraction: float, val_fraction: float) -> str:
    """Deterministic split from a hash of the id: stable across runs, machines and row order."""
    u = int.from_bytes(hashlib.sha256(row_id.encode()).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def row_split(row: dict[str, Any], record: Record | None, split_from: str, test_fraction: float,
              val_fraction: float) -> tuple[str, str] | BadRow:
    """The row's split and where it came from: a built-in task's, its source's (`split_from` "source"), or a
    hash of its id; a source split that names none of train, val and test is a bad row with "source"."""
    if "split" in row:  # a built-in task's
        return row["split"], "task (disjoint by content)"
    source = row.get("_source_split")
    if source is not None:
        try:
            source = split_name(source)
        except ValueError as err:
            if split_from == "source":
                return BadRow(record.where, str(err), column="split")
            source = None
    if source is not None and split_from == "source":
        return source, "source"
    split = assign_split(row["id"], test_fraction, val_fraction)
    return split, "id hash (source test)" if source == "test" else "id hash"


def scratch_schema():
    """The dataset schema as stored, plus the row's content hash and where its split came from (kept only
    until the output is copied)."""
    import pyarrow as pa

    from rftcli.schema import schema_for

    return pa.schema([f.with_nullable(True) for f in schema_for("dataset")]
                     + [pa.field("_content", pa.binary()), pa.field("_origin", pa.string())])


def cross_split(scratch: Path, first_rank: dict[bytes, int], drop: bool) -> tuple[list[bool], dict[str, Any]]:
    """Which scratch rows to keep (all but cross-split duplicates with `drop`), and the manifest's `splits`
    entry: rows per split and per origin of the split, source test rows put in train, cross-split
    duplicates per pair ("test~train": rows of the later split repeating the earlier) and rows dropped."""
    import pyarrow.parquet as pq

    columns = pq.read_table(scratch, columns=["split", "_content", "_origin"])
    keep: list[bool] = []
    splits: dict[str, int] = {}
    origins: dict[str, int] = {}
    pairs: dict[str, int] = {}
    test_in_train = 0
    for split, content, origin in zip(*(columns[c].to_pylist() for c in ("split", "_content", "_origin")),
                                      strict=True):
        earlier = first_rank[content]
        repeat = earlier < SPLITS.index(split)
        if repeat:
            pair = f"{split}~{SPLITS[earlier]}"
            pairs[pair] = pairs.get(pair, 0) + 1
        keep.append(not (repeat and drop))
        if keep[-1]:
            splits[split] = splits.get(split, 0) + 1
            test_in_train += origin == "id hash (source test)" and split == "train"
            origin = origin.removesuffix(" (source test)")
            origins[origin] = origins.get(origin, 0) + 1
    return keep, {"rows": splits, "from": origins, "source_test_in_train": test_in_train,
                  "cross_split_duplicates": pairs, "cross_split_dropped": keep.count(False)}


def copy_out(scratch: Path, writer: TableWriter, keep: list[bool]) -> None:
    """The scratch file's rows that `keep` marks, into the output, a row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    offset = 0
    for batch in pq.ParquetFile(scratch).iter_batches(batch_size=1024):
        table = pa.Table.from_batches([batch]).drop_columns(["_content", "_origin"])
        mask = keep[offset:offset + table.num_rows]
        offset += table.num_rows
        if not all(mask):
            table = table.filter(pa.array(mask))
        if table.num_rows:
            writer.write_table(table)
