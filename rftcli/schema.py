"""The artifact contract: the pyarrow schema of every table rftcli writes, and the only functions that
read and write them.

Tables and what each stage adds (stages add columns, never rename or drop what came in):

    dataset   prepare-data   id, split, task, system, prompt, images, answer, answer_type, choices,
                             reasoning, response, metadata
    rollouts  rollout        dataset columns + group_index, sample_index, completion, completion_ids,
                             logprobs, num_tokens, finish_reason, policy, policy_hash, backend,
                             temperature, top_p, top_k, max_new_tokens, seed
    scores    score          rollouts columns + reward (weighted total) + one reward_<name> per function
    eval      eval           dataset columns except images + model, model_path, set, prompt_variant,
                             sample_index, completion, num_tokens, finish_reason, correct, format_ok,
                             reward_<name>
    rejects   prepare-data   source, location, column, reason, raw (input rows --skip-bad left out)

Every file carries in its Parquet key-value metadata:
    rftcli.schema    "<kind>/<version>", checked on read (`VERSIONS`: eval is at 2 since it gained `set`
                     and `prompt_variant`; a version-1 eval table is refused, naming the stage to re-run)
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
import pyarrow.parquet as pq

from rftcli.atomic import atomic_output
from rftcli.errors import first_line
from rftcli.table_checks import (  # noqa: F401  (ArtifactError, ANSWER_TYPES: importable from here)
    ANSWER_TYPES,
    LOGPROB_SLACK,
    NOT_BLANK,
    ArtifactError,
    check_unique_ids,
    conform,
    physical,
)

SCHEMA_VERSION = 1
VERSIONS = {"eval": 2}
"""Kinds whose schema version moved past SCHEMA_VERSION (eval 2: the `set` and `prompt_variant` columns)."""
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
    _f("set", pa.string(), False, "label of the evaluation set (--set-label; default the file's stem)"),
    _f("prompt_variant", pa.string(), False, "prompt variant the row was asked under: dataset, direct, think or yours"),
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


def schema_version(kind: str) -> int:
    """The version of `kind` tables this rftcli writes and reads."""
    return VERSIONS.get(kind, SCHEMA_VERSION)


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
        SCHEMA_KEY: f"{kind}/{schema_version(kind)}".encode(),
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
        self.schema = physical(_with_metadata(self.spec, kind, manifest))
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
        table = conform(self.path, table, self.spec, self.rows_written)
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
    if version != str(schema_version(kind)):
        raise ArtifactError(f"{path}: {kind} schema version {version} is not the version {schema_version(kind)} this "
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
    table = conform(path, table, expected, 0)
    if kind == "dataset":
        check_unique_ids(path, table)
    if check_images and "images" in table.column_names:
        from rftcli.images import check_table_images

        try:
            check_table_images(path, table)
        except ValueError as err:
            raise ArtifactError(str(err)) from None
    if columns is not None:
        table = table.select(columns)
    return Artifact(path=path, kind=kind, table=table, manifest=manifest)


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
        table = conform(path, pa.Table.from_batches([batch]), expected, offset)
        offset += table.num_rows
        yield table


def dataset_columns(table: pa.Table) -> pa.Table:
    """The dataset part of a rollouts/scores table (what later stages carry forward)."""
    return table.select([f.name for f in DATASET_FIELDS])
