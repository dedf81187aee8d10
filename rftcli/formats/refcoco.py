"""RefCOCO / RefCOCO+ / RefCOCOg grounding: a referring expression and the box of what it names.

Layouts read:
    lmms-lab/RefCOCO (Hub Parquet)  question_id, image, question, answer (the expressions), bbox (COCO
                                    [x, y, w, h] in pixels), segmentation, iscrowd, file_name
    VLM-R1 rec JSON                 image (a path), problem, normal_caption (the expression), solution
                                    ([x1, y1, x2, y2] in pixels)
    refer-style rows                image or file_name; sentence / sentences ([{"sent": ...}] or text) /
                                    expression / caption; bbox (COCO xywh) or box (xyxy)

Boxes: `bbox` is read as COCO xywh and `solution`/`box` as xyxy unless --box-format says otherwise;
units are pixels unless every value is <= 1 (then normalised 0-1) or --box-units says otherwise
(pixel, normalized, norm1000 for Qwen2-VL style 0-1000). Every box is stored as "[x1, y1, x2, y2]" in
pixels of the image as stored (after any resize), answer_type box, and metadata.box_conversion records
the source convention and both image sizes; the source box is kept as metadata.raw_answer.

Prompt: the eval preset's grounding request followed by the expression (the first one when a row has
several; all are kept in metadata.expressions). One row per source row: expressions of one box are not
split into rows.

Sample (VLM-R1 rec JSON):
    [{"image": "train2014/COCO_train2014_000000580957.jpg", "problem": "...", "normal_caption": "bowl behind the others",
      "solution": [40.1, 12.0, 210.7, 150.3]}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rftcli.formats import BadRow, BoxSpec, Context, Where
from rftcli.formats.rows import draft, image_refs, is_empty, metadata_dict
from rftcli.instructions import grounding_prompt

NAME = "refcoco"
_EXPRESSION_KEYS = ("normal_caption", "expression", "sentence", "sentences", "refexp", "caption", "answer")
_BOX_KEYS = (("solution", "xyxy"), ("bbox", "xywh"), ("box", "xyxy"))
_DROP = {"image", "images", "file_name", "problem", "question", "segmentation", "id", "metadata"}


def detect(record: dict[str, Any]) -> bool:
    has_box = any(k in record for k in ("bbox", "box")) or (
        isinstance(record.get("solution"), list) and len(record["solution"]) == 4)
    return has_box and any(k in record for k in _EXPRESSION_KEYS)


def _expressions(value: Any) -> list[str]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        out = []
        for v in value:
            text = v.get("sent", v.get("raw")) if isinstance(v, dict) else v
            if isinstance(text, str) and text.strip():
                out.append(text.strip())
        return out
    return []


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    key = next((k for k in _EXPRESSION_KEYS if _expressions(row.get(k))), None)
    expressions = _expressions(row.get(key)) if key else []
    box_key, box_format = next(((k, f) for k, f in _BOX_KEYS if not is_empty(row.get(k))), (None, None))
    if box_key is None:
        raise BadRow(where, "missing or empty", column="bbox")
    if not expressions:
        raise BadRow(where, "no referring expression (normal_caption, expression, sentence(s), caption or answer)",
                     column="expression")
    values = row[box_key]
    if hasattr(values, "tolist"):
        values = values.tolist()
    if not isinstance(values, list) or len(values) != 4:
        raise BadRow(where, f"expected 4 numbers, got {values!r}", column=box_key)
    spec = BoxSpec(values=tuple(values), format=box_format if ctx.box_format == "auto" else ctx.box_format,
                   units=ctx.box_units)
    images = image_refs(row.get("image")) or image_refs(row.get("images")) or image_refs(row.get("file_name"))
    meta = metadata_dict(row.get("metadata"), where)
    meta.update({k: v for k, v in row.items() if k not in _DROP and k != key and k != box_key})
    meta["expressions"] = expressions
    ident = row.get("id", row.get("question_id"))
    out = draft({"id": ident}, where, prompt=grounding_prompt(expressions[0]) if expressions else None,
                answer=str(values), images=images, task="refcoco", metadata=meta, box=spec)
    out["answer_type"] = "box"
    return out
