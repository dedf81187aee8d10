"""Input data for `prepare-data`: where raw records come from, and how each published layout maps onto the
`dataset` columns.

Two questions, answered separately:

    container  which reader streams the records; chosen from the path (`readers.py`):
               .jsonl/.ndjson, .json (an array, or an object holding one, such as CLEVR's "questions"),
               .csv/.tsv, .parquet (a file or a folder of them), a `datasets` save_to_disk folder (a Dataset
               or a DatasetDict), an image folder with a labels file, the InterGPS Geometry3K folder.
    layout     which adapter turns one record into dataset columns; `--format`, or detected from the
               first readable record when exactly one layout fits it:
               rows        prompt/question/problem, answer, images ... (the plain layout; also MMMU,
                           MathVerse, MMStar, MME, POPE, RealWorldQA and the R1 sets as published)
               llava       LLaVA `conversations`, or role/content `messages` (LLaMA-Factory sharegpt,
                           TRL chat data, content as text or typed parts); the first exchange
               mathvista   MathVista (pid, question, choices, answer, question_type, answer_type, precision ...)
               geometry3k  Geometry3K, InterGPS data.json or the hiyouga/geometry3k Hub layout
               clevr       CLEVR / Super-CLEVR questions (image_filename, question, answer)
               refcoco     RefCOCO/+/g grounding (a referring expression and a bbox)
               scienceqa   ScienceQA (question, choices, answer = index of the right choice, hint, lecture ...)
               aokvqa      A-OKVQA (question, choices, correct_choice_idx, direct_answers, rationales)
               chartqa     ChartQA as HuggingFaceM4 and the GitHub release write it (query, label)
               vqa         VQAv2, TextVQA, DocVQA, VizWiz, OK-VQA (question, answers from several annotators)
               mmbench     MMBench and VLMEvalKit's other multiple-choice TSVs, lmms-lab/MMBench (question,
                           hint, one column per option A, B, C ..., answer letter, image base64 or struct)
               ai2d        lmms-lab/ai2d (question, options, answer = index of the right option, as text)
               wemath      We-Math (question, option "A. x; B. y", answer letter, image_path)
               ocrbench    OCRBench (question, a list of accepted answers, question_type, dataset)

Splits. Where the source has its own split, the rows keep it (`prepare-data --split-from source`, the
default): a file named `<split>-NNNNN-of-NNNNN` (a Hub snapshot's data/test-00000-of-00001.parquet),
`CLEVR_<split>_questions.json`, MathVista's `testmini` file, a save_to_disk DatasetDict's split, the
InterGPS train/val/test folders, or a row's own `split` column or metadata field. `source_split` names
them as published and `split_name` maps them onto train, val and test.

Every reader streams (memory does not grow with the file) and yields `Record`s; a line that cannot be
parsed becomes a `Record` carrying a `BadRow`, so `--skip-bad` can reject it and go on. An adapter
returns a draft row: the dataset columns it knows, `metadata` as a dict, image references (paths,
bytes, {bytes, path} structs, base64 or data URIs) and optionally a video path and a box spec; the stage
then decodes images, normalises the answer and builds the prompt the same way for every layout.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Where:
    """Where a record came from: the file (or folder) and the line, row or item within it."""

    source: str
    location: str = ""

    def __str__(self) -> str:
        return f"{self.source}: {self.location}" if self.location else self.source


class BadRow(ValueError):
    """One input row cannot be converted. The message names file, line or row, and column."""

    def __init__(self, where: Where | str, reason: str | None = None, column: str | None = None):
        if reason is None:  # a finished one-line message
            where, reason = Where(str(where)), str(where)
            message = reason
        else:
            where = where if isinstance(where, Where) else Where(str(where))
            message = f"{where}, column {column!r}: {reason}" if column else f"{where}: {reason}"
        super().__init__(message)
        self.where, self.reason, self.column = where, reason, column


@dataclass
class Record:
    """One raw input record, or the reason it could not be read (`data` None, `error` set)."""

    index: int
    """Position in the input, from 0, counting unreadable lines too: default ids derive from it."""
    where: Where
    data: dict[str, Any] | None
    base_dir: Path
    """Folder that relative image paths in this record start from."""
    error: BadRow | None = None
    raw_text: str | None = None
    """The unparsed text of an unreadable line, for the rejects table."""
    split: str | None = None
    """The split its file or folder names (as published: train, validation, testmini ...), if any."""


@dataclass(frozen=True)
class Context:
    """Settings the adapters need beyond the record."""

    image_root: Path | None = None
    """Folder image paths are relative to; default: the record's base_dir."""
    question: str | None = None
    """Prompt for records that carry none (an image folder with only labels)."""
    box_format: str = "auto"
    """xyxy, xywh, or auto (the layout's convention; xyxy for plain rows)."""
    box_units: str = "auto"
    """pixel, normalized (0-1), norm1000 (0-1000), or auto (normalized when every value <= 1)."""
    allow_outside_paths: bool = False
    """Let image and video paths leave the image folder (`..`, absolute paths, links pointing out)."""


@dataclass(frozen=True)
class BoxSpec:
    """How a source box is written, so the stage can convert it to pixel xyxy of the stored image."""

    values: tuple[float, ...]
    format: str  # xyxy or xywh
    units: str  # pixel, normalized, norm1000 or auto


@dataclass
class Input:
    """An opened input: the container name, a layout the container implies (or None), the records."""

    container: str
    records: Iterator[Record]
    layout_hint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_SHARD = re.compile(r"(?P<split>[A-Za-z][\w.]*?)-\d{5}-of-\d{5}(?:-[0-9a-f]+)?")
_CLEVR = re.compile(r"(?:super)?CLEVR_(?P<split>[A-Za-z]+)_questions", re.IGNORECASE)


def source_split(path: Path) -> str | None:
    """The split a file's name states: `<split>-NNNNN-of-NNNNN` (Hub snapshots), `CLEVR_<split>_questions`,
    MathVista's `testmini`; None for any other name."""
    stem = path.name.split(".", 1)[0] if path.suffix else path.name
    if m := _SHARD.fullmatch(stem) or _CLEVR.fullmatch(stem):
        return m.group("split")
    return "testmini" if stem == "testmini" else None


def split_name(name: Any) -> str:
    """A source split as train, val or test: train..., val/validation/dev/..., test/testmini/testA/...;
    ValueError for a name that says none of them."""
    text = str(name).strip().lower()
    if text.startswith("train"):
        return "train"
    if text.startswith("test"):
        return "test"
    if text in ("val", "valid", "validation", "dev", "development", "minival", "restval") or text.startswith(
            ("val", "dev")):
        return "val"
    raise ValueError(f"source split {name!r} is none of train, val (validation, dev) or test (testmini, testA ...); "
                     "pass --split-from hash to split by id instead")
