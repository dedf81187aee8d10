"""CLEVR and Super-CLEVR questions (the counting data of R1-V and similar).

Source: CLEVR_v1.0/questions/CLEVR_<split>_questions.json, an object {"info": ..., "questions": [...]}
read item by item; each question has image_index, image_filename, question, answer, split,
question_family_index, question_index and program. Images are looked up as <image-root>/<file>, then
beside the questions file, then in images/<split>/ and ../images/<split>/ from it (the published tree).

Mapping: answer_type inferred: counts become number, yes/no and attribute answers text (filter on
`answer_type` afterwards for a counting-only set). id = clevr-<split>-<question_index>. metadata keeps
image_index, split, question_family_index, question_index; the functional `program` is dropped (large).

Sample (CLEVR_val_questions.json):
    {"info": {"split": "val"}, "questions": [{"image_index": 0, "split": "val", "image_filename": "CLEVR_val_000000.png",
     "question": "How many cubes are there?", "answer": "3", "question_family_index": 40, "question_index": 0}]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rftcli.formats import Context, Where
from rftcli.formats.rows import draft, image_base, is_empty

NAME = "clevr"
_DROP = {"image_filename", "question", "answer", "program", "image"}


def detect(record: dict[str, Any]) -> bool:
    return {"image_filename", "question", "answer"} <= record.keys() and (
        "question_family_index" in record or "image_index" in record)


def find_image(name: str, base_dir: Path, ctx: Context, split: str | None) -> str | dict[str, Any]:
    """The path of `name` that exists among the places CLEVR keeps images, relative to the image base
    when possible; the first candidate when none exists (the image step then reports it missing)."""
    root = image_base(base_dir, ctx)
    candidates = [root / name, base_dir / name]
    if split:
        candidates += [base_dir / "images" / split / name, base_dir.parent / "images" / split / name]
    if not ctx.allow_outside_paths and (Path(name).is_absolute() or ".." in Path(name).parts):
        return name  # the image step refuses it, naming the row
    for path in candidates:
        if path.is_file():
            try:
                return str(path.relative_to(root))
            except ValueError:
                # The published tree keeps images beside questions/, outside the file's folder: found by
                # the layout from a bare file name, so read here rather than judged as a user's path.
                return {"bytes": path.read_bytes(), "path": name}
    return name


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    split = row.get("split")
    images = []
    if not is_empty(row.get("image_filename")):
        images = [find_image(str(row["image_filename"]), base_dir, ctx, str(split) if split else None)]
    elif row.get("image") is not None:
        images = [row["image"]]
    meta = {k: v for k, v in row.items() if k not in _DROP}
    ident = f"clevr-{split}-{row['question_index']}" if split and row.get("question_index") is not None else None
    return draft({"id": row.get("id", ident)}, where, prompt=row.get("question"), answer=row.get("answer"),
                 images=images, task="clevr", metadata=meta)
