"""ScienceQA (derek-thomas/ScienceQA and lmms-lab/ScienceQA on the Hub; lupantech/ScienceQA's own
problems.json): multiple-choice science questions, about half with an image.

Source columns: image (an image, or None for text-only questions), question, choices (option texts),
answer (the INDEX of the right option, an int), hint (context, often empty), task, grade, subject,
topic, category, skill, lecture, solution. problems.json maps each id to such a record, with image as
a file name ("image.png", under images/<split>/<id>/) and a split.

Mapping: prompt = "Context: <hint>" (when there is one) above the question, the options listed as
lmms-eval's ScienceQA task writes them; answer = the option letter of the index (answer_type choice;
the index is kept as metadata.answer_index); lecture, solution, subject, topic, grade, skill ... go
to metadata; id = the problems.json key when there is one.

Sample (one row of the Hub Parquet, as JSON):
    {"image": {"bytes": "...", "path": null}, "question": "Which tense does the sentence use?",
     "choices": ["present tense", "future tense", "past tense"], "answer": 1,
     "hint": "Mona will print her name with care.", "subject": "language science", "lecture": "...", "solution": "..."}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rftcli.formats import Context, Where
from rftcli.formats.rows import choices_list, draft, image_base, image_refs, index_letter, is_empty, metadata_dict

NAME = "scienceqa"
_DROP = {"image", "question", "choices", "answer", "hint", "id", "metadata", "split"}


def detect(record: dict[str, Any]) -> bool:
    return {"question", "choices", "answer", "hint", "lecture", "solution"} <= record.keys()


def _image(ref: Any, ident: Any, split: Any, base_dir: Path, ctx: Context) -> Any:
    """A bare file name of problems.json, found under images/<split>/<id>/ when it is there."""
    if not isinstance(ref, str) or is_empty(ident) or is_empty(split) or "/" in ref or "\\" in ref:
        return ref
    root = image_base(base_dir, ctx)
    for candidate in (Path("images") / str(split) / str(ident) / ref, Path(str(split)) / str(ident) / ref):
        if (root / candidate).is_file():
            return str(candidate)
    return ref


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    choices = choices_list(row.get("choices"), where)
    letter = index_letter(row.get("answer"), choices, where, "answer")
    prompt = row.get("question")
    if not is_empty(row.get("hint")) and not is_empty(prompt):
        prompt = f"Context: {str(row['hint']).strip()}\n{prompt}"
    images = [_image(ref, row.get("id"), row.get("split"), base_dir, ctx) for ref in image_refs(row.get("image"))]
    meta = metadata_dict(row.get("metadata"), where)
    meta.update({k: v for k, v in row.items() if k not in _DROP})
    if not is_empty(row.get("split")):
        meta["source_split"] = row["split"]
    if letter is not None:
        meta["answer_index"] = int(row["answer"])
    out = draft({"id": row.get("id"), "choices": choices}, where, prompt=prompt, answer=letter, images=images,
                task="scienceqa", metadata=meta)
    out["answer_type"] = "choice"
    return out
