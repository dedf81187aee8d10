"""The plain layout, and the helpers the other layouts share.

    prompt (or question, or problem)   required text; `<image>` placeholders are removed
    answer                             required; numbers are stored as text, a one-element list as its
                                       element; a list of several texts or numbers is a list of accepted
                                       answers: the first is `answer`, all of them go to metadata.answers
                                       (as the vqa, ocrbench and chartqa layouts keep theirs); the numbers of
                                       a box (answer_type box, or four numbers without an answer_type) stay
                                       one answer; a list of lists or objects is refused. Without one, the
                                       answer of `solution`: the text
                                       inside <answer></answer> (R1-V style), else its last \\boxed{}; the
                                       solution is kept in metadata unless it was only the answer tag
    images / image / image_1..image_N  optional: a path (relative to the input, or --image-root), a list
                                       of them, a data URI or base64 string, or {bytes, path} structs
                                       (paths stay inside that folder unless --allow-outside-paths); an
                                       empty one is no image. A `decoded_image` holding the image
                                       (MathVista/MathVision Hub rows) is used instead of an `image` path
    video                              optional path: frames are sampled into `images` (--video-frames)
    choices (or options)               optional list of option texts (or the text of one, as MMMU writes it).
                                       Without them, options the question lists itself ("Choices:\nA:145°\nB:..."
                                       as MathVerse, "Options: A: ..., B: ..." as MMStar, "A. x" lines) become the
                                       choices when the answer is an option letter or question_type says
                                       multi-choice; the prompt keeps its own listing
    id, task, system, answer_type, reasoning, response: optional; a `split` is kept as
    metadata.source_split and, by default, is the row's split; other fields go to metadata

Sample (JSONL):
    {"id": "q1", "question": "How many apples?", "image": "imgs/1.jpg", "answer": 3}
    {"prompt": "Which is larger?", "choices": ["7", "9"], "answer": "9", "images": ["a.png", "b.png"]}
Published layouts this reads as they are: MathVision (question, options, decoded_image, answer letter or
value), MathVerse and MMStar (question with its options inline, answer letter or value), MMMU (options as
the text of a list, image_1..image_7, `<image 1>` references kept), R1-V / GeoQA / multimodal-open-r1
(problem, solution "<answer> 3 </answer>"; its evaluation files: image_path, question, ground_truth), ViRL39K (question, answer "\\boxed{3}", image paths), MMK12,
ThinkLite-VL (problem, answer, image), EasyR1's hiyouga/geometry3k (images, problem "<image>...", answer),
MME and POPE (question, answer Yes/No), RealWorldQA, lmms-lab/ChartQA (question, answer).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from rftcli.formats import BadRow, Context, Where

NAME = "rows"
KNOWN = ("id", "task", "system", "prompt", "images", "answer", "answer_type", "choices", "reasoning", "response",
         "metadata", "split")
_NUMBERED_IMAGE = re.compile(r"image_?(\d+)")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_OPTIONS_HEADER = re.compile(r"(?:^|\n)[ \t]*(?:Options|Choices)[ \t]*:[ \t]*\n?", re.IGNORECASE)
_FIRST_LABEL = re.compile(r"(?m)^[ \t]*\(?A[.):]")
_HEADED_LABEL = re.compile(r"[ \t]*\(?A[.):]")
_MULTI_CHOICE = {"multi-choice", "multi_choice", "multiple-choice", "multiple_choice", "multiple choice"}


def detect(record: dict[str, Any]) -> bool:
    return True


def is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def required_text(value: Any, where: Where, column: str) -> str:
    if is_empty(value) or (isinstance(value, (list, dict)) and not value):
        raise BadRow(where, "missing or empty", column=column)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def prompt_text(value: Any, where: Where) -> str:
    """The question as text: a string (or a number); a list, object or true/false is a mapping mistake."""
    if isinstance(value, bool) or isinstance(value, (list, dict)):
        kind = "true/false" if isinstance(value, bool) else "a list" if isinstance(value, list) else "an object"
        raise BadRow(where, f"expected text, found {kind}; --map may name the field that holds the question",
                     column="prompt")
    return required_text(value, where, "prompt")


def answer_text(value: Any) -> Any:
    """Numbers as text; a one-element list as its element; other lists and objects as JSON text; None
    and empty text stay missing."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, int, float)):
        value = value[0]
    if is_empty(value):
        return None
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def accepted_answers(value: Any, answer_type: Any, where: Where) -> tuple[Any, list[str] | None]:
    """(answer, accepted answers or None) of an `answer` field, by the rule every layout follows: a list of
    several accepted answers (texts or numbers) gives its first as the answer and all of them for
    metadata.answers; a box's numbers (answer_type box, or four numbers and no answer_type) and anything
    else go through `answer_text`. A list holding lists, objects or true/false is refused, naming the row."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or len(value) < 2:
        return answer_text(value), None
    scalar = [isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value]
    numbers = all(ok and not isinstance(v, str) for ok, v in zip(scalar, value, strict=True))
    if answer_type == "box" or (numbers and len(value) == 4 and is_empty(answer_type)):
        return answer_text(value), None
    if not all(scalar):
        raise BadRow(where, "expected an answer, or a list of accepted answers (texts or numbers); found a list "
                            "holding lists, objects or true/false", column="answer")
    accepted = [str(v).strip() for v in value if str(v).strip()]
    return (accepted[0] if accepted else None), (accepted if len(accepted) > 1 else None)


def from_solution(solution: Any) -> str | None:
    """The answer inside <answer></answer> of an R1-style solution, else None."""
    if isinstance(solution, str) and (m := _ANSWER_TAG.search(solution)):
        return m.group(1).strip() or None
    return None


def last_boxed(text: Any) -> str | None:
    """The content of the last \\boxed{...} in `text` (braces balanced), else None."""
    if not isinstance(text, str):
        return None
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j].strip() or None
    return None


def solution_answer(solution: Any) -> str | None:
    """The answer a `solution` column gives: inside <answer></answer>, else its last \\boxed{}."""
    return from_solution(solution) or last_boxed(solution)


def text_list(value: Any) -> Any:
    """A list written as text ("['a', 'b']", as MMMU's options and A-OKVQA's direct_answers on the Hub)
    as the list; anything else unchanged."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, str) and value.strip().startswith("["):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(value)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
            if isinstance(parsed, list):
                return parsed
    return value


def _next_label(letter: str) -> re.Pattern[str]:
    """Option `letter`'s label after an earlier option: on a new line, after a comma or semicolon, or "(B)"."""
    return re.compile(rf"(?:\n[ \t]*|[,;][ \t]*)\(?{letter}[.):]|[ \t]\({letter}\)")


def inline_choices(text: Any) -> list[str] | None:
    """The options a question lists itself, in order from A: after an "Options:" / "Choices:" header
    (MMStar's "Options: A: x, B: y", MathVerse's "Choices:\nA:x\nB:y"), or from a line starting with
    "A." / "A:" / "(A)" (one option a line, or "A. x; B. y" as We-Math writes its `option`). The last
    option ends with its line. None unless at least two non-empty options are found."""
    if not isinstance(text, str):
        return None
    headers = list(_OPTIONS_HEADER.finditer(text))
    first = _HEADED_LABEL.match(text, headers[-1].end()) if headers else _FIRST_LABEL.search(text)
    if first is None:
        return None
    options, pos = [], first.end()
    for letter in _LETTERS[1:]:
        label = _next_label(letter).search(text, pos)
        line_end = text.find("\n", pos)
        if label is not None and 0 <= line_end < label.start() and text[line_end:label.start()].strip():
            label = None  # other text comes first: the options ended with their line
        end = label.start() if label is not None else line_end if line_end >= 0 else len(text)
        options.append(text[pos:end].strip().rstrip(",;").strip())
        if label is None:
            break
        pos = label.end()
    return options if len(options) >= 2 and all(options) else None


def _letter_answer(answer: Any) -> str | None:
    """The answer when it is one option letter ("B", "(B)", "\\boxed{B}"), else None."""
    if not isinstance(answer, str):
        return None
    text = (last_boxed(answer) or answer).strip().strip("().").strip()
    return text if len(text) == 1 and text in _LETTERS else None


def listed_choices(prompt: Any, answer: Any, question_type: Any = None) -> list[str] | None:
    """The options listed in `prompt`, for a row whose answer is an option letter or whose question_type
    says multiple choice; None when there are none, or when the answer letter is not among them."""
    letter = _letter_answer(answer)
    if letter is None and str(question_type or "").strip().lower() not in _MULTI_CHOICE:
        return None
    found = inline_choices(prompt)
    if found is None or (letter is not None and _LETTERS.index(letter) >= len(found)):
        return None
    return found


def choices_list(value: Any, where: Where, column: str = "choices") -> list[str] | None:
    if value is None:
        return None
    value = text_list(value)  # numpy arrays from pandas-written Parquet, lists written as text
    if not isinstance(value, list) or not all(isinstance(c, (str, int, float)) for c in value):
        raise BadRow(where, "expected a list of strings", column=column)
    return [str(c) for c in value] or None


def index_letter(value: Any, choices: list[str] | None, where: Where, column: str) -> str | None:
    """The option letter of an answer given as a 0-based index into `choices` (ScienceQA's `answer`,
    A-OKVQA's `correct_choice_idx`); None when the index is missing (an unlabelled test split)."""
    if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRow(where, f"expected a whole number (an index into the choices), got {value!r}", column=column)
    count = len(choices or [])
    if not 0 <= value < count:
        raise BadRow(where, f"answer index {value} is out of range for {count} choices", column=column)
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[value] if value < 26 else str(value)


def metadata_dict(value: Any, where: Where) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise BadRow(where, "not a JSON object", column="metadata") from None
    if not isinstance(value, dict):
        raise BadRow(where, "not a JSON object", column="metadata")
    return dict(value)


def image_refs(value: Any) -> list[Any]:
    """Image references in `value` (one or a list); None and empty text are no image."""
    if value is None:
        return []
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (str, bytes, dict)):
        value = [value]
    return [v for v in value if v is not None and not (isinstance(v, str) and not v.strip())]


def image_base(base_dir: Path, ctx: Context) -> Path:
    return ctx.image_root if ctx.image_root is not None else base_dir


def numbered_images(row: dict[str, Any]) -> list[Any]:
    """image_1, image_2, ... (MMMU-style multi-image rows), in number order; the keys are removed."""
    found = sorted((int(m.group(1)), k) for k in list(row) if (m := _NUMBERED_IMAGE.fullmatch(k)))
    values = [row.pop(k) for _, k in found]
    return [v for v in values if v is not None]


def draft(row: dict[str, Any], where: Where, *, prompt: Any, answer: Any, images: list[Any], task: str,
          metadata: dict[str, Any], **columns: Any) -> dict[str, Any]:
    """A draft row as adapters return it; prompt and answer are checked here for every layout."""
    out = {
        "id": str(row["id"]) if not is_empty(row.get("id")) else None,
        "task": str(row["task"]) if not is_empty(row.get("task")) else task,
        "system": row.get("system") or None,
        "prompt": prompt_text(prompt, where),
        "answer": required_text(answer, where, "answer"),
        "answer_type": row.get("answer_type") or None,
        "choices": choices_list(row.get("choices"), where),
        "reasoning": row.get("reasoning") or None,
        "response": row.get("response") or None,
        "images": images,
        "video": None,
        "box": None,
        "metadata": metadata,
    }
    out.update(columns)
    return out


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    prompt = next((row.pop(k) for k in ("prompt", "question", "problem") if not is_empty(row.get(k))), None)
    for k in ("prompt", "question", "problem"):
        if k in row and is_empty(row[k]):
            row.pop(k)
    if prompt is None:
        prompt = ctx.question
    if prompt is None:
        raise BadRow(where, "missing or empty (no prompt, question or problem; --question gives rows without one "
                            "a prompt)", column="prompt")
    if is_empty(row.get("answer")) and "ground_truth" in row:  # R1-V's evaluation files
        row["answer"] = row.pop("ground_truth")
    answer, accepted = accepted_answers(row.get("answer"), row.get("answer_type"), where)
    if answer is None and (solved := solution_answer(row.get("solution"))) is not None:
        answer = solved
        if _ANSWER_TAG.fullmatch(row["solution"].strip()):
            row.pop("solution")  # nothing but the answer
    if row.get("choices") is None and "options" in row:
        row["choices"] = row.pop("options")
    if choices_list(row.get("choices"), where) is None:
        row["choices"] = listed_choices(prompt, answer, row.get("question_type"))
    decoded = row.pop("decoded_image", None)
    if isinstance(decoded, dict) and decoded.get("bytes"):
        if not decoded.get("path") and isinstance(row.get("image"), str):
            decoded = {**decoded, "path": row["image"]}
        row["image"] = decoded  # the image itself; `image` held its path in the source archive
    elif decoded is not None:
        row["decoded_image"] = decoded
    if row.get("images") is None and row.get("image") is None and "image_path" in row:
        row["image"] = row.pop("image_path")  # R1-V's evaluation files name the image by its path only
    images = image_refs(row.pop("images", None)) + image_refs(row.pop("image", None)) + numbered_images(row)
    meta = metadata_dict(row.get("metadata"), where)
    meta.update({k: v for k, v in row.items() if k not in KNOWN and k != "video"})
    if accepted:
        meta["answers"] = accepted
    if not is_empty(row.get("split")):
        meta["source_split"] = row["split"]  # the row's split unless --split-from hash
    return draft(row, where, prompt=prompt, answer=answer, images=images, task="custom", metadata=meta,
                 video=row.get("video") or None)
