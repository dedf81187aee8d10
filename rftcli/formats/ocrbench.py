"""OCRBench (echo840/OCRBench on the Hub, and OCRBench.json of the GitHub release): text recognition,
scene-text, document and handwriting questions with one or more accepted answers.

Source columns: Hub: dataset (the source set, e.g. IIIT5K), question, question_type (e.g. "Regular Text
Recognition"), answer (a LIST of accepted answers), image. Release: dataset_name, id, image_path (relative
to the file or --image-root), question, answers (one answer as text, or a list), type.

Mapping: prompt = the question; answer = the first accepted answer (answer_type inferred from it); all
accepted answers stay in metadata.answers (OCRBench counts a prediction right when it contains any of
them); the question type goes to metadata.question_type, the source set to metadata.dataset; ids are
generated (the release's id is kept in metadata).

Sample (one row of the Hub Parquet, as JSON):
    {"dataset": "IIIT5K", "question": "what is written in the image?", "question_type": "Regular Text
     Recognition", "answer": ["CHOICE"], "image": {"bytes": "...", "path": null}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rftcli.formats import BadRow, Context, Where
from rftcli.formats.rows import draft, image_refs, metadata_dict, text_list

NAME = "ocrbench"
_DROP = {"question", "answer", "answers", "image", "image_path", "images", "metadata", "dataset", "dataset_name",
         "type", "question_type"}


def detect(record: dict[str, Any]) -> bool:
    hub = {"dataset", "question", "question_type", "answer"} <= record.keys()
    release = {"dataset_name", "question", "answers", "type"} <= record.keys()
    return hub or release


def _accepted(value: Any, where: Where, column: str) -> list[str]:
    value = text_list(value)
    values = value if isinstance(value, list) else [] if value is None else [value]
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
        raise BadRow(where, "expected an answer or a list of answer strings", column=column)
    return [str(v).strip() for v in values if str(v).strip()]


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    column = "answer" if "answer" in row else "answers"
    answers = _accepted(row.get(column), where, column)
    meta = metadata_dict(row.get("metadata"), where)
    meta.update({k: v for k, v in row.items() if k not in _DROP})  # a release id too: it repeats
    meta["answers"] = answers
    meta["dataset"] = row.get("dataset", row.get("dataset_name"))
    meta["question_type"] = row.get("question_type", row.get("type"))
    images = image_refs(row.get("image")) + image_refs(row.get("image_path")) + image_refs(row.get("images"))
    return draft({}, where, prompt=row.get("question"), answer=answers[0] if answers else None,
                 images=images, task="ocrbench", metadata=meta)
