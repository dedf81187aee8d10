"""MathVista (AI4Math/MathVista on the Hub, testmini and test): math questions about figures.

Source columns: pid, question, image (a path such as "images/1.jpg"), decoded_image (the image itself),
choices, unit, precision, answer, question_type (multi_choice | free_form), answer_type (text | integer
| float | list), metadata (category, context, grade, img_height, img_width, language, skills, source,
split, task), query (MathVista's own prompt with its answer hints; not used).

Mapping: prompt = question, with the options listed for multi_choice, and for free_form a hint on the
answer's form built from answer_type, precision and unit ("Answer with a number with 2 decimal places.").
answer_type: multi_choice -> choice (the answer, an option's text, is stored as its letter), integer and
float -> number, text and list -> text. metadata keeps pid, unit, precision (the eval preset rounds to
it), question_type, the source answer_type as `source_answer_type`, and MathVista's metadata fields
flattened (so `task`, `category`, `skills` ... are top-level metadata keys). id = pid.

Also read: the GitHub release's testmini.json, an object mapping each pid to its record.

Sample (one row of the Hub Parquet, as JSON):
    {"pid": "1", "question": "What is the value of x?", "image": "images/1.jpg", "choices": ["1", "2", "3"],
     "answer": "2", "question_type": "multi_choice", "answer_type": "text", "precision": null, "metadata": {"task": "geometry problem solving"}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rftcli.formats import BadRow, Context, Where
from rftcli.formats.rows import choices_list, draft, is_empty, metadata_dict

NAME = "mathvista"
_TYPES = {"integer": "number", "float": "number", "text": "text", "list": "text"}
_DROP = {"query", "image", "decoded_image", "question", "choices", "answer", "metadata", "pid", "answer_type", "id"}


def detect(record: dict[str, Any]) -> bool:
    return {"pid", "question", "question_type", "answer_type"} <= record.keys()


def _hint(answer_type: str | None, precision: Any, unit: Any) -> str:
    if answer_type == "integer":
        text = "Answer with an integer."
    elif answer_type == "float":
        digits = int(float(precision)) if precision is not None else None
        text = (f"Answer with a number with {digits} decimal place{'s' if digits != 1 else ''}."
                if digits is not None else "Answer with a number.")
    elif answer_type == "list":
        text = "Answer with a Python list."
    else:
        text = ""
    if not is_empty(unit):
        text = f"{text} The unit is {unit}.".strip()
    return text


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    choices = choices_list(row.get("choices"), where)
    qtype = row.get("question_type")
    source_type = row.get("answer_type")
    image = row.get("decoded_image")
    if not (isinstance(image, dict) and image.get("bytes")):
        image = row.get("image")
    prompt = row.get("question")
    if qtype == "multi_choice":
        if not choices:
            raise BadRow(where, "a multi_choice question without choices", column="choices")
        answer_type = "choice"
    else:
        answer_type = _TYPES.get(str(source_type), "text")
        if not is_empty(prompt) and (hint := _hint(source_type, row.get("precision"), row.get("unit"))):
            prompt = f"{str(prompt).rstrip()}\n{hint}"
    meta = {k: v for k, v in row.items() if k not in _DROP}
    meta.update(metadata_dict(row.get("metadata"), where))
    meta["pid"] = row.get("pid")
    meta["source_answer_type"] = source_type
    out = draft({"id": row.get("pid"), "choices": choices}, where, prompt=prompt, answer=row.get("answer"),
                images=[image] if image is not None else [], task="mathvista", metadata=meta)
    out["answer_type"] = answer_type
    return out
