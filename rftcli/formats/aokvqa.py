"""A-OKVQA (allenai/aokvqa as released, and HuggingFaceM4/A-OKVQA on the Hub): multiple-choice
questions about COCO images that need world knowledge.

Source columns: question_id, question, choices (four option texts), correct_choice_idx (the INDEX of
the right option), direct_answers (ten free-form answers from annotators; the Hub rows hold the text of
a Python list, "['cab', 'cab', ...]"), difficult_direct_answer, rationales; the Hub rows carry the
image, the release an image_id and split: its image is the COCO 2017 file `<split>2017/<image_id as 12
digits>.jpg` (A-OKVQA's own `get_coco_path`), looked for under --image-root (the COCO folder) or beside
the input.

Mapping: prompt = the question with the options listed; answer = the option letter of
correct_choice_idx (answer_type choice; the index is kept as metadata.answer_index). The free-form
answers are not a second answer encoding: they stay in metadata.direct_answers (as a list), with the
rationales and the rest; id = question_id. A row without correct_choice_idx (the unlabelled test split)
is a bad row: its answer is missing.

Sample (one row of the Hub Parquet, as JSON):
    {"image": {"bytes": "...", "path": null}, "question_id": "22jbM6gDxdaMaunuzgrsBB",
     "question": "What is in the motorcyclist's mouth?", "choices": ["toothpick", "food", "popsicle stick", "cigarette"],
     "correct_choice_idx": 3, "direct_answers": "['cigarette', ...]", "difficult_direct_answer": false, "rationales": ["..."]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rftcli.formats import Context, Where
from rftcli.formats.rows import choices_list, draft, image_refs, index_letter, metadata_dict, text_list

NAME = "aokvqa"
_DROP = {"image", "images", "question", "choices", "correct_choice_idx", "question_id", "id", "metadata", "answer"}


def detect(record: dict[str, Any]) -> bool:
    return {"question", "choices", "correct_choice_idx"} <= record.keys()


def _coco_path(row: dict[str, Any]) -> str | None:
    """The release's image: `<split>2017/<image_id:012>.jpg`, relative to the image root."""
    image_id, split = row.get("image_id"), row.get("split")
    if isinstance(image_id, str) and image_id.strip().isdigit():
        image_id = int(image_id)
    if isinstance(image_id, bool) or not isinstance(image_id, int) or not isinstance(split, str) or not split.strip():
        return None
    return f"{split.strip()}2017/{image_id:012d}.jpg"


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    choices = choices_list(row.get("choices"), where)
    letter = index_letter(row.get("correct_choice_idx"), choices, where, "correct_choice_idx")
    meta = metadata_dict(row.get("metadata"), where)
    meta.update({k: v for k, v in row.items() if k not in _DROP})
    for key in ("direct_answers", "rationales"):
        if key in meta:
            meta[key] = text_list(meta[key])
    if letter is not None:
        meta["answer_index"] = int(row["correct_choice_idx"])
    images = image_refs(row.get("image")) + image_refs(row.get("images"))
    if not images and (coco := _coco_path(row)) is not None:
        images = [coco]
    ident = row.get("question_id", row.get("id"))
    out = draft({"id": ident, "choices": choices}, where, prompt=row.get("question"), answer=letter, images=images,
                task="aokvqa", metadata=meta)
    out["answer_type"] = "choice"
    return out
