"""prepare-data: raw data in, one validated `dataset` Parquet out.

Reads a built-in synthetic task (`--task counting`) or a JSONL / Parquet file whose rows hold a
question, an answer and image paths or inline base64 (`--input data.jsonl`). Writes the `dataset`
table (see `rftcli.schema`), streaming in batches, with a split assigned by a hash of each row's id
so the same row always lands in the same split.

Input rows (JSONL or Parquet), after `--map src=dst` renames:
    prompt (or question)   required text
    answer                 required; numbers are stored as text
    images / image         optional: a path (relative to the input file), a list of them, a data URI
                           or base64 string, or {bytes, path} structs
    id, task, system, answer_type, choices, reasoning, response: optional; other fields go to metadata
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rftcli.manifest import make_manifest
from rftcli.schema import TableWriter
from rftcli.tasks import INSTRUCTION, TASKS

_KNOWN = {"id", "task", "system", "prompt", "images", "answer", "answer_type", "choices", "reasoning", "response",
          "metadata", "split"}
_ANSWER_TYPES = {"number", "choice", "text", "math", "box"}


@dataclass(frozen=True)
class Config:
    out: Path
    """Output dataset Parquet file."""
    task: str | None = None
    """Built-in synthetic task to generate (counting)."""
    input: Path | None = None
    """JSONL or Parquet file to convert (instead of --task)."""
    num: int = 1000
    """Rows to generate for a synthetic task."""
    task_options: tuple[str, ...] = ()
    """Synthetic task knobs as key=value (counting: image_size, max_count, distractors)."""
    map: tuple[str, ...] = ()
    """Column renames for --input, as src=dst (e.g. question=prompt)."""
    instruction: str | None = None
    """Instruction appended to each prompt; default: think in <think>, answer in <answer>. '' for none."""
    test_fraction: float = 0.1
    """Share of rows assigned to the test split (by id hash)."""
    val_fraction: float = 0.0
    """Share of rows assigned to the val split (by id hash)."""
    limit: int | None = None
    """Stop after this many rows."""
    seed: int = 0
    """Seed for synthetic data."""
    overwrite: bool = False
    """Replace an existing output."""

    def __post_init__(self):
        if (self.task is None) == (self.input is None):
            raise ValueError("give exactly one of --task (synthetic data) or --input (a file to convert)")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; built-in tasks: {', '.join(TASKS)}")
        if not 0 <= self.test_fraction + self.val_fraction < 1 or self.test_fraction < 0 or self.val_fraction < 0:
            raise ValueError("test_fraction and val_fraction must be >= 0 and sum to less than 1")
        if self.num < 1:
            raise ValueError("num must be at least 1")
        for item in self.task_options + self.map:
            if "=" not in item:
                raise ValueError(f"expected key=value, got {item!r}")


@dataclass(frozen=True)
class Result:
    path: Path
    rows: int
    splits: dict[str, int] = field(default_factory=dict)


def assign_split(row_id: str, test_fraction: float, val_fraction: float) -> str:
    """Deterministic split from a hash of the id: stable across runs, machines and row order."""
    u = int.from_bytes(hashlib.sha256(row_id.encode()).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


class BadRow(ValueError):
    """One input row cannot be converted; carries the location for the message."""


def _image_item(value: Any, base_dir: Path, where: str) -> dict[str, Any]:
    if isinstance(value, dict):
        if value.get("bytes"):
            return {"bytes": bytes(value["bytes"]), "path": value.get("path")}
        value = value.get("path")
    if not isinstance(value, str) or not value:
        raise BadRow(f"{where}, column 'images': expected an image path or base64 string, got {value!r}")
    if value.startswith("data:"):
        decoded = _b64_image(value.partition(",")[2])
        if decoded is None:
            raise BadRow(f"{where}, column 'images': data URI is not valid base64")
        return {"bytes": decoded, "path": None}
    path = Path(value) if Path(value).is_absolute() else base_dir / value
    if path.is_file():
        return {"bytes": path.read_bytes(), "path": value}
    decoded = _b64_image(value)
    if decoded is None:
        raise BadRow(f"{where}, column 'images': image file {path} not found")
    return {"bytes": decoded, "path": None}


_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def _b64_image(text: str) -> bytes | None:
    """Decoded bytes if `text` is base64 of an image file, else None (then it was meant as a path)."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if data.startswith(_IMAGE_MAGIC) else None


def _check_image(data: bytes, where: str) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except Exception as err:  # PIL raises many types for broken files
        raise BadRow(f"{where}, column 'images': unreadable image ({type(err).__name__})") from None


def convert_row(raw: dict[str, Any], where: str, base_dir: Path, renames: dict[str, str]) -> dict[str, Any]:
    """One input record to a dataset row (without split). Raises BadRow naming the column."""
    row = {renames.get(k, k): v for k, v in raw.items()}
    if "prompt" not in row and "question" in row:
        row["prompt"] = row.pop("question")
    if "images" not in row and "image" in row:
        row["images"] = row.pop("image")
    for name in ("prompt", "answer"):
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise BadRow(f"{where}, column {name!r}: missing or empty")
    images = row.get("images")
    if images is None:
        images = []
    elif isinstance(images, (str, dict)):
        images = [images]
    items = [_image_item(v, base_dir, where) for v in images]
    for item in items:
        _check_image(item["bytes"], where)
    answer = row["answer"]
    answer = json.dumps(answer) if isinstance(answer, (list, dict)) else str(answer)
    answer_type = row.get("answer_type") or ("number" if _is_number(answer) else "text")
    if answer_type not in _ANSWER_TYPES:
        raise BadRow(f"{where}, column 'answer_type': {answer_type!r} is not one of {', '.join(sorted(_ANSWER_TYPES))}")
    choices = row.get("choices")
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
        raise BadRow(f"{where}, column 'choices': expected a list of strings")
    extra = {k: v for k, v in row.items() if k not in _KNOWN and k not in ("question", "image")}
    meta = row.get("metadata")
    if isinstance(meta, str) and meta:
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            raise BadRow(f"{where}, column 'metadata': not a JSON object") from None
    meta = {**(meta or {}), **extra}
    return {
        "id": str(row["id"]) if row.get("id") is not None else None,
        "task": str(row.get("task") or "custom"),
        "system": row.get("system"),
        "prompt": str(row["prompt"]),
        "images": items,
        "answer": answer,
        "answer_type": answer_type,
        "choices": choices,
        "reasoning": row.get("reasoning"),
        "response": row.get("response"),
        "metadata": json.dumps(meta, default=str, sort_keys=True) if meta else None,
    }


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def _records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, record) pairs of a JSONL or Parquet file, streamed."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise BadRow(f"{path}: line {lineno}, column {err.colno}: malformed JSON ({err.msg})") from None
                if not isinstance(record, dict):
                    raise BadRow(f"{path}: line {lineno}: expected a JSON object")
                yield f"{path}: line {lineno}", record
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            for record in batch.to_pylist():
                yield f"{path}: row {row}", record
                row += 1
    else:
        raise ValueError(f"{path}: unsupported input format {suffix!r}; use .jsonl or .parquet")


def _rows(config: Config) -> Iterator[dict[str, Any]]:
    if config.task is not None:
        knobs = {k: _parse_value(v) for k, v in (item.split("=", 1) for item in config.task_options)}
        if config.instruction is not None:
            knobs["instruction"] = config.instruction
        try:
            yield from TASKS[config.task](config.num, config.seed, **knobs)
        except TypeError as err:
            raise ValueError(f"task {config.task}: bad --task-option ({err})") from None
        return
    if not config.input.is_file():
        raise ValueError(f"{config.input}: no such file")
    renames = dict(item.split("=", 1) for item in config.map)
    instruction = INSTRUCTION if config.instruction is None else config.instruction
    for i, (where, record) in enumerate(_records(config.input)):
        row = convert_row(record, where, config.input.parent, renames)
        if row["id"] is None:
            row["id"] = f"{config.input.stem}-{i:07d}"
        if instruction and instruction not in row["prompt"]:
            row["prompt"] = f"{row['prompt']} {instruction}"
        yield row


def run(config: Config) -> Result:
    inputs = {"input": config.input} if config.input else {}
    manifest = make_manifest("prepare-data", config, inputs, seed=config.seed)
    seen: set[str] = set()
    splits: dict[str, int] = {}
    batch: list[dict[str, Any]] = []
    with TableWriter(config.out, "dataset", manifest, overwrite=config.overwrite) as writer:
        for row in _rows(config):
            if config.limit is not None and len(seen) >= config.limit:
                break
            if row["id"] in seen:
                raise BadRow(f"{config.input or config.task}: duplicate id {row['id']!r}")
            seen.add(row["id"])
            row["split"] = assign_split(row["id"], config.test_fraction, config.val_fraction)
            splits[row["split"]] = splits.get(row["split"], 0) + 1
            batch.append(row)
            if len(batch) >= 256:
                writer.write_rows(batch)
                batch = []
        writer.write_rows(batch)
        if writer.rows_written == 0:
            raise ValueError(f"{config.input or config.task}: no rows to write")
    return Result(path=config.out, rows=len(seen), splits=splits)
