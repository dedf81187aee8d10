"""Open-ended VQA with several annotators' answers: VQAv2 (HuggingFaceM4/VQAv2), TextVQA (facebook/textvqa,
lmms-lab/textvqa), DocVQA (lmms-lab/DocVQA), VizWiz-VQA, OK-VQA.

Source columns: question; answers, a list of answer strings (TextVQA, DocVQA) or of {"answer": ...,
"answer_confidence": ..., "answer_id": ...} objects (VQAv2, VizWiz); VQAv2's multiple_choice_answer (its
most frequent answer); question_id / questionId; image; answer_type, VQA's own kind of answer ("yes/no",
"number", "other", "unanswerable"), which is not rftcli's `answer_type`.

Mapping: prompt = the question; answer = multiple_choice_answer where the source gives it, else the answer
most annotators gave (on a tie, the first of them); metadata.answers = the accepted answers, which the
rewards pay as they pay `answer` (docs/data.md): `answer` and every answer at least `FULL_CREDIT`
annotators gave (VQA accuracy, min(#annotators who gave it / 3, 1), gives those full credit; an answer
given by one or two annotators is not paid), or every answer when no answer repeats (DocVQA lists
equivalent answers once each); answers are counted without regard to case or spacing, each kept as first
written. Every annotator's answer, in order, stays in metadata.annotator_answers. VQA's answer_type goes
to metadata.vqa_answer_type and rftcli's answer_type is inferred from the answer; id = question_id (or
questionId); the rest goes to metadata.

Sample (one row of HuggingFaceM4/VQAv2, as JSON):
    {"question_type": "what color", "multiple_choice_answer": "white", "answers": [{"answer": "white",
     "answer_confidence": "yes", "answer_id": 1}, ...], "image_id": 262148, "answer_type": "other",
     "question_id": 262148000, "question": "What color is the plate?", "image": {"bytes": "...", "path": null}}
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rftcli.formats import BadRow, Context, Where
from rftcli.formats.rows import draft, image_refs, is_empty, metadata_dict, text_list

NAME = "vqa"
FULL_CREDIT = 3
"""Annotators who must give an answer for it to be accepted (VQA accuracy's threshold for full credit)."""
_DROP = {"image", "images", "question", "answers", "multiple_choice_answer", "answer_type", "question_id",
         "questionId", "id", "metadata"}


def detect(record: dict[str, Any]) -> bool:
    from rftcli.formats import ocrbench  # OCRBench's release also has question and answers

    return ({"question", "answers"} <= record.keys() and "answer" not in record
            and not {"choices", "options"} & record.keys() and not ocrbench.detect(record))


def _answers(value: Any, where: Where) -> list[str]:
    value = text_list(value)
    if not isinstance(value, list):
        raise BadRow(where, "expected a list of answers", column="answers")
    out = []
    for item in value:
        text = item.get("answer") if isinstance(item, dict) else item
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            raise BadRow(where, "expected answer strings or {\"answer\": ...} objects", column="answers")
        if str(text).strip():
            out.append(str(text).strip())
    return out


def _accepted(answers: list[str], main: Any) -> list[str]:
    """`main` first, then the answers at least `FULL_CREDIT` annotators gave, or all when none repeats."""
    first: dict[str, str] = {}  # normalised answer -> its first spelling
    counts: Counter[str] = Counter()
    for a in answers:
        key = " ".join(a.lower().split())
        first.setdefault(key, a)
        counts[key] += 1
    repeats = any(k > 1 for k in counts.values())
    accepted = [first[key] for key, k in counts.items() if k >= FULL_CREDIT or not repeats]
    main = None if is_empty(main) else str(main).strip()
    if main and " ".join(main.lower().split()) not in {" ".join(a.lower().split()) for a in accepted}:
        accepted.insert(0, main)
    return accepted


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    answers = _answers(row.get("answers"), where)
    main = row.get("multiple_choice_answer")
    if is_empty(main):
        counts = Counter(answers)  # insertion-ordered: most_common keeps the first seen among equals
        main = counts.most_common(1)[0][0] if counts else None
    meta = metadata_dict(row.get("metadata"), where)
    meta.update({k: v for k, v in row.items() if k not in _DROP})
    meta["answers"] = _accepted(answers, main)
    meta["annotator_answers"] = answers
    if not is_empty(row.get("answer_type")):
        meta["vqa_answer_type"] = row["answer_type"]
    ident = next((row[k] for k in ("question_id", "questionId", "id") if not is_empty(row.get(k))), None)
    images = image_refs(row.get("image")) + image_refs(row.get("images"))
    return draft({"id": ident}, where, prompt=row.get("question"), answer=main, images=images, task="vqa",
                 metadata=meta)
