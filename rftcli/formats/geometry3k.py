"""Geometry3K: geometry problems with a diagram, in either published layout.

InterGPS (lupantech/InterGPS, as released): a folder <split>/<id>/ holding data.json and img_diagram.png;
data.json has id, problem_text, choices (four option texts), answer (the option letter),
problem_type_graph, problem_type_goal, annotat_text, compact_text, compact_choices, precise_value,
rough_value, source, comment. `--input geometry3k/` reads the whole folder (train/val/test).

Hub (hiyouga/geometry3k, the EasyR1 layout): images (a list), problem ("<image>Find x."), answer (the
option's value, e.g. "3"), and in later revisions id, choices and ground_truth (the option letter).

Mapping: prompt = problem_text / problem without `<image>`, options listed. With choices, answer_type
is choice and the answer is stored as the option letter (from the letter given, or by matching the
answer to an option); without choices the answer is kept as written (number or math, inferred).
metadata keeps problem_type_goal (the eval preset's category) and the remaining source fields except
the bulky logic-form text; the InterGPS split goes to `source_split`.

Sample (InterGPS data.json, beside img_diagram.png):
    {"id": 2401, "problem_text": "Find x.", "choices": ["3", "6", "9", "12"], "answer": "B",
     "problem_type_graph": ["Triangle"], "problem_type_goal": ["Length"]}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rftcli.formats import Context, Where
from rftcli.formats.rows import choices_list, draft, image_refs, is_empty, metadata_dict

NAME = "geometry3k"
_LETTER = re.compile(r"\(?([A-Z])\)?\.?")
_DROP = {"problem_text", "problem", "choices", "answer", "ground_truth", "images", "image", "id", "metadata",
         "annotat_text", "compact_text", "compact_choices"}


def detect(record: dict[str, Any]) -> bool:
    intergps = {"problem_text", "choices", "answer"} <= record.keys() and (
        "problem_type_goal" in record or "annotat_text" in record)
    hub = {"problem", "choices", "ground_truth", "answer"} <= record.keys()
    return intergps or hub


def _letter(value: Any) -> str | None:
    if isinstance(value, str) and (m := _LETTER.fullmatch(value.strip())):
        return m.group(1)
    return None


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    prompt = row.get("problem_text") if not is_empty(row.get("problem_text")) else row.get("problem")
    choices = choices_list(row.get("choices"), where)
    answer = row.get("answer")
    meta = metadata_dict(row.get("metadata"), where)
    meta.update({k: v for k, v in row.items() if k not in _DROP})
    if choices:
        letter = _letter(answer) or _letter(row.get("ground_truth"))
        if letter is not None and answer is not None and str(answer).strip() != letter:
            meta["answer_value"] = answer
        answer = letter or answer  # an option's text: normalised to its letter later
        answer_type = "choice"
    else:
        answer_type = None
    images = image_refs(row.get("images")) + image_refs(row.get("image"))
    out = draft({"id": row.get("id"), "choices": choices}, where, prompt=prompt, answer=answer, images=images,
                task="geometry3k", metadata=meta)
    out["answer_type"] = answer_type
    return out
