"""AI2D as lmms-lab/ai2d publishes it: science diagrams with multiple-choice questions.

Source columns: question, options (the option texts, a list), answer (the INDEX of the right option,
written as text: "2"), image. lmms-eval's ai2d task takes options[int(answer)] as the target, or its
letter. VLMEvalKit's AI2D_TEST.tsv (A, B, C, D columns, answer letter) is read by the mmbench layout.

Mapping: prompt = the question with the options listed; answer = the option letter of the index
(answer_type choice; the index is kept as metadata.answer_index).

Detected only from exactly these columns (question, options, answer, image; an id may be added) with an
answer that is a whole number naming an option by its index and equal to none of the option texts: a
plain row with `options` whose answer is an option's value ("3" among "2", "3", "4") is left to the rows
layout, which matches it by text. `--format ai2d` or `--format rows` decides for a file whose first row
is ambiguous.

Sample (one row of the Hub Parquet, as JSON):
    {"question": "Which of these define dairy item", "options": ["c", "D", "b", "a"], "answer": "1",
     "image": {"bytes": "...", "path": null}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rftcli.formats import Context, Where
from rftcli.formats.rows import choices_list, draft, image_refs, index_letter, metadata_dict

NAME = "ai2d"
_COLUMNS = {"question", "options", "answer", "image"}


def detect(record: dict[str, Any]) -> bool:
    answer, options = record.get("answer"), record.get("options")
    whole = (isinstance(answer, int) and not isinstance(answer, bool)) or (
        isinstance(answer, str) and answer.strip().isdigit())
    extra = {"id", "source_split"}  # source_split: added by a save_to_disk DatasetDict
    if not (_COLUMNS <= record.keys() <= _COLUMNS | extra and whole and isinstance(options, list)):
        return False
    texts = {str(o).strip() for o in options}
    return int(str(answer).strip()) < len(options) and str(answer).strip() not in texts


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    choices = choices_list(row.get("options"), where, "options")
    letter = index_letter(row.get("answer"), choices, where, "answer")
    meta = metadata_dict(row.get("metadata"), where)
    meta.update({k: v for k, v in row.items() if k not in _COLUMNS | {"id", "metadata"}})
    if letter is not None:
        meta["answer_index"] = int(str(row["answer"]).strip())
    out = draft({"id": row.get("id"), "choices": choices}, where, prompt=row.get("question"), answer=letter,
                images=image_refs(row.get("image")), task="ai2d", metadata=meta)
    out["answer_type"] = "choice"
    return out
