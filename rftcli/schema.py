"""The artifact contract: the pyarrow schema of every table rftcli writes, and the only functions that
read and write them.

Tables and what each stage adds (stages add columns, never rename or drop what came in):

    dataset   prepare-data   id, split, task, system, prompt, images, answer, answer_type, choices,
                             reasoning, response, metadata
    rollouts  rollout        dataset columns + group_index, sample_index, completion, completion_ids,
                             logprobs, num_tokens, finish_reason, policy, policy_hash, backend,
                             temperature, top_p, top_k, max_new_tokens, seed
    scores    score          rollouts columns + reward (weighted total) + one reward_<name> per function
    eval      eval           dataset columns except images + model, model_path, sample_index,
                             completion, num_tokens, finish_reason, correct, format_ok, reward_<name>
    rejects   prepare-data   source, location, column, reason, raw (input rows --skip-bad left out)

Every file carries in its Parquet key-value metadata:
    rftcli.schema    "<kind>/<version>", checked on read
    rftcli.manifest  JSON: stage, resolved config, inputs and hashes, package versions, seed
    huggingface      the `datasets` features, so `load_dataset("parquet", ...)` decodes images to PIL

`metadata` columns hold a JSON object as text: portable to pandas, DuckDB, polars and `datasets` alike.
Row numbers in error messages count from 0, as pandas does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rftcli.atomic import atomic_output
from rftcli.errors import first_line

SCHEMA_VERSION = 1
SCHEMA_KEY = b"rftcli.schema"
MANIFEST_KEY = b"rftcli.manifest"
HF_KEY = b"huggingface"
CHECK_KEY = b"rftcli.footer_sha256"
REWARD_PREFIX = "reward_"

# One image: encoded bytes (PNG/JPEG as read) and the path it came from, if any. This is the layout
# `datasets.Image()` uses, so the column decodes to PIL images there.
IMAGE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])


def _f(name: str, type_: pa.DataType, nullable: bool, doc: str) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


DATASET_FIELDS: tuple[pa.Field, ...] = (
    _f("id", pa.string(), False, "unique row id; the prompt id in later tables"),
    _f("split", pa.string(), False, "train, val or test (deterministic by id hash)"),
    _f("task", pa.string(), False, "task name, e.g. counting, math, grounding"),
    _f("system", pa.string(), True, "system prompt, or null for the model's default"),
    _f("prompt", pa.string(), False, "user turn text, instruction template applied"),
    _f("images", pa.list_(IMAGE), False, "images shown before the prompt text, in order"),
    _f("answer", pa.string(), False, "ground-truth answer as text"),
    _f("answer_type", pa.string(), False, "how to compare answers: number, choice, text, math, box"),
    _f("choices", pa.list_(pa.string()), True, "options of a multiple-choice question, else null"),
    _f("reasoning", pa.string(), True, "reference reasoning for SFT, else null"),
    _f("response", pa.string(), True, "full reference assistant turn for SFT, else null"),
    _f("metadata", pa.string(), True, "JSON object with source-specific fields"),
)

ROLLOUT_FIELDS: tuple[pa.Field, ...] = DATASET_FIELDS + (
    _f("group_index", pa.int64(), False, "index of the prompt's group in this rollout run"),
    _f("sample_index", pa.int32(), False, "index of the completion within its group, 0..n-1"),
    _f("completion", pa.string(), False, "generated text, special tokens removed"),
    _f("completion_ids", pa.list_(pa.int32()), False, "generated token ids, eos included if produced"),
    _f("logprobs", pa.list_(pa.float32()), False, "per-token log-prob under the sampling distribution"),
    _f("num_tokens", pa.int32(), False, "len(completion_ids)"),
    _f("finish_reason", pa.string(), False, "stop (eos or stop string) or length"),
    _f("policy", pa.string(), False, "model argument the completions came from"),
    _f("policy_hash", pa.string(), False, "content hash of that checkpoint (built-ins: their name)"),
    _f("backend", pa.string(), False, "generation backend: hf or vllm"),
    _f("temperature", pa.float32(), False, "sampling temperature"),
    _f("top_p", pa.float32(), False, "nucleus sampling threshold (1 = off)"),
    _f("top_k", pa.int32(), False, "top-k sampling (0 = off)"),
    _f("max_new_tokens", pa.int32(), False, "generation length limit"),
    _f("seed", pa.int64(), False, "sampling seed of this completion (derived from --seed, id and sample_index)"),
)

SCORE_FIELDS: tuple[pa.Field, ...] = ROLLOUT_FIELDS + (
    _f("reward", pa.float64(), False, "weighted sum of the reward_<name> columns (abstentions count 0)"),
)

EVAL_FIELDS: tuple[pa.Field, ...] = tuple(f for f in DATASET_FIELDS if f.name != "images") + (
    _f("model", pa.string(), False, "label of the evaluated model"),
    _f("model_path", pa.string(), False, "model argument as given"),
    _f("sample_index", pa.int32(), False, "0 for greedy; 0..k-1 with --samples k"),
    _f("completion", pa.string(), False, "generated text"),
    _f("num_tokens", pa.int32(), False, "generated tokens"),
    _f("finish_reason", pa.string(), False, "stop or length"),
    _f("correct", pa.bool_(), False, "scorer reward == 1 (accuracy unless --preset or --scorer picks another)"),
    _f("format_ok", pa.bool_(), False, "strict format reward == 1"),
)

REJECT_FIELDS: tuple[pa.Field, ...] = (
    _f("source", pa.string(), False, "input file or folder the row came from"),
    _f("location", pa.string(), False, "line, row or item in the source, as error messages name it"),
    _f("column", pa.string(), True, "input column at fault, or null when the row as a whole is bad"),
    _f("reason", pa.string(), False, "why the row was left out"),
    _f("raw", pa.string(), True, "the input row as JSON text (bytes as their length, long text cut)"),
)

KINDS: dict[str, tuple[pa.Field, ...]] = {
    "dataset": DATASET_FIELDS,
    "rollouts": ROLLOUT_FIELDS,
    "scores": SCORE_FIELDS,
    "eval": EVAL_FIELDS,
    "rejects": REJECT_FIELDS,
}
# Kinds that may carry extra per-function reward columns.
_REWARD_KINDS = {"scores", "eval"}


class ArtifactError(ValueError):
    """A file is not a valid artifact of the expected kind; the message names file, row and column."""


def reward_field(name: str) -> pa.Field:
    return _f(REWARD_PREFIX + name, pa.float64(), True, f"reward function {name!r}; null = abstained")


def schema_for(kind: str, reward_names: Iterable[str] = ()) -> pa.Schema:
    """The exact schema of a `kind` table (with its reward columns for scores/eval)."""
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; known: {', '.join(KINDS)}")
    fields = list(KINDS[kind])
    if kind in _REWARD_KINDS:
        fields += [reward_field(n) for n in reward_names]
    elif list(reward_names):
        raise ValueError(f"{kind} tables have no reward columns")
    return pa.schema(fields)


def _hf_feature(t: pa.DataType, name: str) -> dict[str, Any]:
    if name == "images":
        return {"feature": {"_type": "Image"}, "_type": "List"}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"feature": _hf_feature(t.value_type, ""), "_type": "List"}
    if pa.types.is_struct(t):
        return {f.name: _hf_feature(f.type, f.name) for f in t}
    dtype = {"bool": "bool", "binary": "binary", "large_string": "large_string"}.get(str(t), str(t))
    return {"dtype": dtype, "_type": "Value"}


def hf_features(schema: pa.Schema) -> dict[str, Any]:
    """The `datasets` features of a table, so `datasets` decodes the images column as images."""
    return {f.name: _hf_feature(f.type, f.name) for f in schema}


def _with_metadata(schema: pa.Schema, kind: str, manifest: Mapping[str, Any]) -> pa.Schema:
    meta = {
        SCHEMA_KEY: f"{kind}/{SCHEMA_VERSION}".encode(),
        MANIFEST_KEY: json.dumps(manifest, sort_keys=True).encode(),
        HF_KEY: json.dumps({"info": {"features": hf_features(schema)}}).encode(),
    }
    meta[CHECK_KEY] = _footer_digest(meta[SCHEMA_KEY], meta[MANIFEST_KEY]).encode()
    return schema.with_metadata(meta)


def _footer_digest(tag: bytes, manifest: bytes) -> str:
    """sha256 of the rftcli metadata in a file's footer, which Parquet's page checksums do not cover: the
    schema tag and the manifest (the reward weights and the policy offline GRPO trains with). Columns are
    left out, so a table edited with pyarrow, its metadata kept, still reads."""
    import hashlib

    return hashlib.sha256(tag + b"\n" + manifest).hexdigest()


def reward_names_of(schema: pa.Schema) -> list[str]:
    return [f.name[len(REWARD_PREFIX):] for f in schema if f.name.startswith(REWARD_PREFIX)]


def _physical(schema: pa.Schema) -> pa.Schema:
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


def _conform(path: Path, table: pa.Table, schema: pa.Schema, offset: int) -> pa.Table:
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
    out = pa.Table.from_arrays(columns, schema=_physical(schema.remove_metadata()))
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


class TableWriter:
    """Write a table in batches under a temporary name; it appears at `path` only on `close()`.

    Use as a context manager: an exception inside the block leaves no file behind.
        with TableWriter(out, "scores", manifest, reward_names=["accuracy"]) as w:
            w.write_rows(rows)
    """

    def __init__(self, path: str | Path, kind: str, manifest: Mapping[str, Any], *, reward_names: Iterable[str] = (),
                 overwrite: bool = False, row_group_size: int = 1024):
        self.path = Path(path)
        self.kind = kind
        self.spec = schema_for(kind, reward_names)
        self.schema = _physical(_with_metadata(self.spec, kind, manifest))
        self.rows_written = 0
        self._row_group_size = row_group_size
        self._ctx = atomic_output(self.path, overwrite=overwrite)
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> TableWriter:
        self._tmp = self._ctx.__enter__()
        # Page checksums: a flipped bit in a stored page is an error on read, not a silently wrong value.
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd", write_page_checksum=True)
        return self

    def write_table(self, table: pa.Table) -> None:
        table = _conform(self.path, table, self.spec, self.rows_written)
        self._writer.write_table(table, row_group_size=self._row_group_size)
        self.rows_written += table.num_rows

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        missing = [f.name for f in self.spec if f.name not in rows[0] and not f.nullable]
        if missing:
            raise ArtifactError(f"{self.path}: row {self.rows_written}, column {missing[0]!r}: missing value")
        try:
            table = pa.Table.from_pylist(rows, schema=self.schema.remove_metadata())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise ArtifactError(f"{self.path}: rows {self.rows_written}-{self.rows_written + len(rows) - 1}: {err}") from None
        self.write_table(table)

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self._writer.close()  # a full disk often shows here, when the last pages are flushed
        except Exception as err:
            if exc_type is None:  # the temporary file goes too, then the error
                self._ctx.__exit__(type(err), err, err.__traceback__)
                raise
        return bool(self._ctx.__exit__(exc_type, exc, tb))


def write_table(path: str | Path, kind: str, data: pa.Table | list[dict[str, Any]], manifest: Mapping[str, Any], *,
                reward_names: Iterable[str] = (), overwrite: bool = False) -> Path:
    """Validate and write a whole table atomically; returns the path."""
    with TableWriter(path, kind, manifest, reward_names=reward_names, overwrite=overwrite) as w:
        if isinstance(data, pa.Table):
            w.write_table(data)
        else:
            w.write_rows(data)
    return Path(path)


@dataclass(frozen=True)
class Artifact:
    """A validated table: its rows, its kind, and the manifest of the stage that wrote it."""

    path: Path
    kind: str
    table: pa.Table
    manifest: dict[str, Any]

    @property
    def reward_names(self) -> list[str]:
        return reward_names_of(self.table.schema)


def inspect_file(path: str | Path, kinds: tuple[str, ...]) -> tuple[str, dict[str, Any], pa.Schema]:
    """Check a Parquet file's rftcli metadata and schema without reading its rows.

    Returns (kind, manifest, expected schema). Raises ArtifactError with a one-line reason.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise ArtifactError(f"{path}: not a readable Parquet file ({first_line(err)})") from None
    meta = schema.metadata or {}
    want = " or ".join(kinds)
    if SCHEMA_KEY not in meta:
        raise ArtifactError(f"{path}: not an rftcli {want} table (no rftcli.schema metadata); "
                            "convert raw data with `rftcli prepare-data`")
    tag = meta[SCHEMA_KEY].decode(errors="replace")
    kind, _, version = tag.partition("/")
    if kind not in KINDS:
        raise ArtifactError(f"{path}: unknown rftcli.schema tag {tag!r}, expected {want}")
    if kind not in kinds:
        raise ArtifactError(f"{path}: is a {kind} table, expected {want}")
    if version != str(SCHEMA_VERSION):
        raise ArtifactError(f"{path}: {kind} schema version {version} is not the version {SCHEMA_VERSION} this "
                            "rftcli reads; re-run the stage that made it with this rftcli")
    if CHECK_KEY in meta and meta[CHECK_KEY].decode(errors="replace") != _footer_digest(
            meta[SCHEMA_KEY], meta.get(MANIFEST_KEY, b"")):
        raise ArtifactError(f"{path}: the rftcli metadata in the file's footer is damaged (its manifest does not "
                            "match the checksum rftcli wrote)")
    try:
        manifest = json.loads(meta.get(MANIFEST_KEY, b"{}"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ArtifactError(f"{path}: rftcli.manifest metadata is not valid JSON") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: rftcli.manifest metadata is not a JSON object")
    expected = schema_for(kind, reward_names_of(schema) if kind in _REWARD_KINDS else ())
    for field in expected:
        if field.name not in schema.names:
            raise ArtifactError(f"{path}: column {field.name!r} is missing")
    return kind, manifest, expected


def read_table(path: str | Path, kinds: str | tuple[str, ...], columns: list[str] | None = None, *,
               check_images: bool = False) -> Artifact:
    """Read and validate a whole artifact. `kinds` lists the kinds the caller accepts. With `check_images`,
    every image must also open (see `rftcli.images.check_table_images`): for stages about to use them."""
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    path = Path(path)
    kind, manifest, expected = inspect_file(path, kinds)
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as err:
        raise ArtifactError(f"{path}: cannot read rows, the file is damaged ({first_line(err)})") from None
    table = _conform(path, table, expected, 0)
    if kind == "dataset":
        _check_unique_ids(path, table)
    if check_images and "images" in table.column_names:
        from rftcli.images import check_table_images

        try:
            check_table_images(path, table)
        except ValueError as err:
            raise ArtifactError(str(err)) from None
    if columns is not None:
        table = table.select(columns)
    return Artifact(path=path, kind=kind, table=table, manifest=manifest)


def _check_unique_ids(path: Path, table: pa.Table) -> None:
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


def iter_batches(path: str | Path, kinds: str | tuple[str, ...], batch_size: int = 1024) -> Iterator[pa.Table]:
    """Stream a validated artifact in batches, so memory does not grow with the file."""
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    path = Path(path)
    _, _, expected = inspect_file(path, kinds)
    offset = 0
    batches = pq.ParquetFile(path, page_checksum_verification=True).iter_batches(batch_size=batch_size)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as err:
            raise ArtifactError(f"{path}: cannot read rows after row {offset}, the file is damaged "
                                f"({first_line(err)})") from None
        table = _conform(path, pa.Table.from_batches([batch]), expected, offset)
        offset += table.num_rows
        yield table


def dataset_columns(table: pa.Table) -> pa.Table:
    """The dataset part of a rollouts/scores table (what later stages carry forward)."""
    return table.select([f.name for f in DATASET_FIELDS])
