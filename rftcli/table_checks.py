"""What a valid value is in a table rftcli reads or writes: each check names the file, the row and the column
of the first value that fails it (`ArtifactError`), and every stage holds its input to the same checks.

`conform` reorders and casts a table to its schema and checks, row by row: missing values (list items too,
for token ids and log-probs), types (numbers are never read as text or text as numbers), blank fields,
`answer_type`, `metadata` as a JSON object, text that is not UTF-8, NaN or infinite numbers, negative token
ids and log-probs above 0. `check_unique_ids` refuses a repeated dataset id. `rftcli.schema` owns the schemas
and the functions that read and write tables, and calls these.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc


class ArtifactError(ValueError):
    """A file is not a valid artifact of the expected kind; the message names file, row and column."""


def physical(schema: pa.Schema) -> pa.Schema:
    """The schema as stored: every field nullable. `datasets` only honours its stored features for
    fields that equal its own (always nullable) ones; required columns are enforced by `_check_nulls`."""
    return pa.schema([f.with_nullable(True) for f in schema], metadata=schema.metadata)


def _check_nulls(path: Path, table: pa.Table, spec: pa.Schema, offset: int) -> None:
    for field in spec:
        if field.nullable:
            continue
        col = table.column(field.name)
        if col.null_count:
            row = pc.index(pc.is_null(col), True).as_py()
            raise ArtifactError(f"{path}: row {offset + row}, column {field.name!r}: missing value")


def conform(path: Path, table: pa.Table, schema: pa.Schema, offset: int) -> pa.Table:
    """Reorder and cast `table` to `schema`, naming the first column or row that does not fit."""
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            raise ArtifactError(f"{path}: column {field.name!r} is missing")
        col = table.column(field.name)
        if not col.type.equals(field.type):
            if not _same_kind(col.type, field.type):
                raise ArtifactError(f"{path}: column {field.name!r}: expected {field.type}, found {col.type}")
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise ArtifactError(
                    f"{path}: column {field.name!r}: expected {field.type}, found {col.type}") from None
        columns.append(col)
    out = pa.Table.from_arrays(columns, schema=physical(schema.remove_metadata()))
    _check_nulls(path, out, schema, offset)
    _check_values(path, out, offset)
    return out


def _same_kind(found: pa.DataType, wanted: pa.DataType) -> bool:
    """Whether a column stored as `found` may be read as `wanted`: the same kind of value in another width
    or encoding (int32 as int64, an integer as a float, large or dictionary-encoded text as text), never
    numbers as text or text as numbers, which a cast would turn into other values."""
    t = pa.types
    if t.is_null(found):
        return True
    if t.is_dictionary(found):
        return _same_kind(found.value_type, wanted)
    if t.is_integer(wanted):
        return t.is_integer(found)
    if t.is_floating(wanted):
        return t.is_floating(found) or t.is_integer(found)
    if t.is_boolean(wanted):
        return t.is_boolean(found)
    if t.is_string(wanted) or t.is_large_string(wanted):
        return t.is_string(found) or t.is_large_string(found)
    if t.is_binary(wanted) or t.is_large_binary(wanted):
        return t.is_binary(found) or t.is_large_binary(found)
    if t.is_list(wanted) or t.is_large_list(wanted):
        return (t.is_list(found) or t.is_large_list(found)) and _same_kind(found.value_type, wanted.value_type)
    if t.is_struct(wanted):
        if not t.is_struct(found):
            return False
        fields = {found.field(i).name: found.field(i).type for i in range(found.num_fields)}
        return all(wanted.field(i).name not in fields or _same_kind(fields[wanted.field(i).name], wanted.field(i).type)
                   for i in range(wanted.num_fields))
    return True


def _first_row(path: Path, column: pa.ChunkedArray, bad: pa.ChunkedArray | pa.Array, offset: int,
               name: str, what: str) -> ArtifactError:
    """The error for the first row where the boolean `bad` holds (list columns: `bad` per list item)."""
    flat = pa.chunked_array([bad]) if isinstance(bad, pa.Array) else bad
    index = pc.index(flat, True).as_py()
    if pa.types.is_list(column.type):
        index = pc.list_parent_indices(column.combine_chunks()).to_pylist()[index]
    return ArtifactError(f"{path}: row {offset + index}, column {name!r}: {what}")


_NO_NULL_ITEMS = ("completion_ids", "logprobs")
"""List columns whose items are all required: a token id or log-prob per generated token."""
LOGPROB_SLACK = 1e-3
"""A log-probability may exceed 0 by rounding only this much."""


def _check_items(path: Path, table: pa.Table, offset: int) -> None:
    """Token ids and log-probs: no missing item, ids not negative, log-probs not above 0 (a probability
    over 1): values a training step would index or divide with."""
    for name in _NO_NULL_ITEMS:
        if name not in table.column_names:
            continue
        col = table.column(name)
        values = pc.list_flatten(col)
        if values.null_count:
            raise _first_row(path, col, pc.is_null(values), offset, name, "missing item in the list")
        if name == "completion_ids" and len(values) and pc.min(values).as_py() < 0:
            raise _first_row(path, col, pc.less(values, 0), offset, name, "negative token id")
        if name == "logprobs" and len(values) and pc.max(values).as_py() > LOGPROB_SLACK:
            raise _first_row(path, col, pc.fill_null(pc.greater(values, LOGPROB_SLACK), False), offset, name,
                             "log-probability above 0 (a probability over 1)")


ANSWER_TYPES = ("number", "choice", "text", "math", "box")
"""The values of `answer_type` (how rewards compare an answer; see `rftcli.rewards.accuracy`)."""


NOT_BLANK = ("id", "split", "task", "prompt", "answer")
"""Text columns no row may leave blank (empty or only whitespace), in every table that has them: the row checks
prepare-data makes, made again wherever a table is read or written, so a table written by another tool is held
to them too."""


def _check_fields(path: Path, table: pa.Table, offset: int) -> None:
    """Text columns with a fixed vocabulary or a format: NOT_BLANK columns not blank, `answer_type` one of
    ANSWER_TYPES, `metadata` a JSON object (or missing)."""
    for name in NOT_BLANK:
        if name in table.column_names:
            col = table.column(name)
            blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(col), ""), False)
            if pc.any(blank).as_py():
                raise _first_row(path, col, blank, offset, name, "blank (empty or only whitespace)")
    if "answer_type" in table.column_names:
        col = table.column("answer_type")
        bad = pc.fill_null(pc.invert(pc.is_in(col, pa.array(ANSWER_TYPES))), False)
        if pc.any(bad).as_py():
            value = col.filter(bad)[0].as_py()
            raise _first_row(path, col, bad, offset, "answer_type",
                             f"{value[:40]!r} is not one of {', '.join(ANSWER_TYPES)}")
    if "metadata" in table.column_names:
        col = table.column("metadata")
        for row, text in enumerate(col.to_pylist()):
            if text is None:
                continue
            try:
                ok = isinstance(json.loads(text), dict)
            except (ValueError, RecursionError):
                ok = False
            if not ok:
                raise ArtifactError(f"{path}: row {offset + row}, column 'metadata': not a JSON object")


def _check_values(path: Path, table: pa.Table, offset: int) -> None:
    """Values a type cannot rule out: text that is not UTF-8 (Parquet does not check it, Python cannot
    decode it) and floats that are NaN or infinite (a reward or log-prob that would poison a loss); then
    `_check_items` and `_check_fields`."""
    for name in table.column_names:
        col = table.column(name)
        t = col.type
        inner = t.value_type if pa.types.is_list(t) else t
        values = pc.list_flatten(col) if pa.types.is_list(t) else col
        if pa.types.is_string(inner):
            try:
                values.validate(full=True)
            except pa.ArrowInvalid:
                bad = [not _is_utf8(v) for v in values.cast(pa.binary()).to_pylist()]
                raise _first_row(path, col, pa.array(bad), offset, name, "text is not valid UTF-8") from None
        elif pa.types.is_floating(inner) and values.null_count < len(values):
            finite = pc.is_finite(values)
            if pc.any(pc.invert(finite)).as_py():
                raise _first_row(path, col, pc.fill_null(pc.invert(finite), False), offset, name,
                                 "not a finite number (NaN or infinite)")
    _check_items(path, table, offset)
    _check_fields(path, table, offset)


def _is_utf8(value: bytes | None) -> bool:
    if value is None:
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def check_unique_ids(path: Path, table: pa.Table) -> None:
    """A dataset's ids name its rows (rollout seeds, eval flips, resume keys): a repeated one is refused."""
    ids = table.column("id")
    if pc.count_distinct(ids).as_py() == table.num_rows:
        return
    seen: dict[str, int] = {}
    for row, value in enumerate(ids.to_pylist()):
        if value in seen:
            raise ArtifactError(f"{path}: row {row}, column 'id': {value!r} repeats the id of row {seen[value]}; "
                                "ids must be unique")
        seen[value] = row
