"""The accuracy reward: 1.0 when the completion's final answer matches the ground truth, else 0.0.

Reads the dataset columns `answer` (ground truth as text), `answer_type` and `choices`; other columns
TRL passes (prompts, completion_ids, trainer_state, ...) are ignored. The final answer is found by
`extract_answer` (last `<answer>` block, else last `\\boxed{}`, else last number; never inside
`<think>`); no answer scores 0.0. A row without a ground truth abstains (None).

How each `answer_type` compares (a missing type is inferred from the answer, see `infer_answer_type`):
    number  `parse_number` on both sides, relative tolerance `REL_TOL`: "1,000" = "1000", "x = 3" = "3",
            "3 cm" = "3", "1/2" = "\\frac12" = "0.5", "50%" = "50" = "0.5"; "3.0001" != "3". A prediction
            that is not a plain number but looks like math ("\\sqrt{4}") goes to math_verify.
    choice  the option letter: "B", "(B)", "B.", "B)", "B. Paris", "the answer is B", or the option's
            text when `choices` is given; the ground truth may be a letter or the option text.
    text    exact match after lower-casing and dropping punctuation and extra whitespace.
    math    numbers as above when both sides are numbers, else math_verify (`\\frac12` = `0.5`,
            `2x+1` = `1+2x`) under the deadline of `rftcli.rewards.mathcheck`. math_verify itself
            rounds to 6 decimals, so "0.333333" = "1/3" there.
    box     a bounding box [x1, y1, x2, y2]: IoU with the ground truth >= `BOX_IOU`.
A prediction with words in it ("3 or 4") never reaches math_verify, which would otherwise pick one
number out of a hedge.

Examples:
    >>> accuracy(["<think>..</think><answer>(B)</answer>"], answer=["B"], answer_type=["choice"])
    [1.0]
    >>> accuracy([[{"role": "assistant", "content": "<answer>x = 1,000</answer>"}]], answer=["1000"])
    [1.0]
    >>> accuracy(["<answer>\\\\frac{1}{2}</answer>", "<answer>0.51</answer>"], answer=["0.5", "0.5"])
    [1.0, 0.0]
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from rftcli.rewards.mathcheck import math_equal
from rftcli.rewards.numeric import REL_TOL, numbers_equal, parse_number  # noqa: F401  (REL_TOL re-exported)
from rftcli.rewards.text import completion_text, extract_answer

ANSWER_TYPES = ("number", "choice", "text", "math", "box")
BOX_IOU = 0.5
"""Minimum intersection-over-union for a box answer to count as correct."""

_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")
_MATHY = re.compile(r"[\\^_{}=+\-*/()\[\]\d]")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox|boxed)\s*\{([^{}]*)\}")
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is\s*:?|:)\s*", re.IGNORECASE)
_SPACE_LIKE = re.compile(r"[-‐‑‒–—―/_]+")
_NOT_WORD = re.compile(r"[^\w\s]+")
_CHOICE_PREFIX = re.compile(
    r"^(?:the\s+)?(?:final\s+|correct\s+|best\s+)?(?:answer|option|choice)\s*(?:is\s*:?|:)?\s*", re.IGNORECASE)
_LETTER_ONLY = re.compile(r"\(?([A-Za-z])\)?[.:)]?")
_LETTER_LEAD = re.compile(r"\(?([A-Z])[).:]\s+\S.*", re.DOTALL)
_OPTION_LABEL = re.compile(r"^\(?[A-Z][).:]\s+")
_BOX_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_BOX_GOLD = re.compile(r"\[\s*(?:-?\d+(?:\.\d+)?\s*,\s*){3}-?\d+(?:\.\d+)?\s*\]")


def normalize_text(text: str) -> str:
    """Lower case, `\\text{}` unwrapped, dashes and slashes as spaces, other punctuation dropped."""
    s = unicodedata.normalize("NFKC", _TEXT_WRAPPER.sub(r"\1", text)).replace("$", "").lower()
    return " ".join(_NOT_WORD.sub("", _SPACE_LIKE.sub(" ", s)).split())


def looks_like_math(text: str) -> bool:
    """No English words outside LaTeX commands, and some digit or operator."""
    bare = _LATEX_COMMAND.sub(" ", _TEXT_WRAPPER.sub(" ", text))
    return not _WORD.search(bare) and bool(_MATHY.search(text))


def infer_answer_type(answer: str, choices: Sequence[str] | None = None) -> str:
    """choice with options or a lone letter; number; box for "[x1, y1, x2, y2]"; math; else text."""
    if choices:
        return "choice"
    if parse_number(answer) is not None:
        return "number"
    if _BOX_GOLD.fullmatch(answer.strip()):
        return "box"
    if _LETTER_ONLY.fullmatch(answer.strip()) and answer.strip().strip("().:").isupper():
        return "choice"
    return "math" if looks_like_math(answer) else "text"


def choice_letter(text: str, choices: Sequence[str] | None = None) -> str | None:
    """The option letter `text` names ("(b)" -> "B", "B. Paris" -> "B", option text -> its letter)."""
    s = _TEXT_WRAPPER.sub(r"\1", text).replace("$", "").replace("**", "").strip().rstrip(".").strip()
    s = _CHOICE_PREFIX.sub("", s)
    if m := _LETTER_ONLY.fullmatch(s):
        return m.group(1).upper()
    if m := _LETTER_LEAD.fullmatch(s):
        return m.group(1)
    if choices:
        wanted = normalize_text(s)
        for i, option in enumerate(choices):
            if wanted and normalize_text(_OPTION_LABEL.sub("", option)) == wanted:
                return chr(ord("A") + i)
    return None


def _number_match(pred: str, gold: str, choices) -> bool:
    p, g = parse_number(pred), parse_number(gold)
    if p is not None and g is not None:
        return numbers_equal(p, g)
    return looks_like_math(pred) and math_equal(pred, gold)


def _choice_match(pred: str, gold: str, choices) -> bool:
    want = choice_letter(gold, choices)
    if want is None:  # the ground truth is neither a letter nor one of the options
        return _text_match(pred, gold, choices)
    return choice_letter(pred, choices) == want


def _text_match(pred: str, gold: str, choices) -> bool:
    p = normalize_text(_ANSWER_PREFIX.sub("", pred.strip()))
    return bool(p) and p == normalize_text(gold)


def _math_match(pred: str, gold: str, choices) -> bool:
    if _text_match(pred, gold, choices):
        return True
    p, g = parse_number(pred), parse_number(gold)
    if p is not None and g is not None:
        return numbers_equal(p, g)
    return looks_like_math(pred) and math_equal(pred, gold)


def _box_match(pred: str, gold: str, choices) -> bool:
    p, g = _BOX_NUMBER.findall(pred), _BOX_NUMBER.findall(gold)
    if len(p) != 4 or len(g) != 4:  # more than one box in the answer is a hedge, not an answer
        return False
    return box_iou([float(v) for v in p], [float(v) for v in g]) >= BOX_IOU


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (corners in either order)."""
    ax1, ax2, ay1, ay2 = min(a[0], a[2]), max(a[0], a[2]), min(a[1], a[3]), max(a[1], a[3])
    bx1, bx2, by1, by2 = min(b[0], b[2]), max(b[0], b[2]), min(b[1], b[3]), max(b[1], b[3])
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


_MATCHERS = {"number": _number_match, "choice": _choice_match, "text": _text_match, "math": _math_match,
             "box": _box_match}


def score_answer(pred: str | None, answer: Any, answer_type: str | None = None,
                 choices: Sequence[str] | None = None) -> float | None:
    """1.0 or 0.0 for one extracted prediction; None (abstain) when there is no ground truth."""
    if answer is None or not str(answer).strip():
        return None
    gold = str(answer).strip()
    choices = [str(c) for c in choices] if choices is not None else None  # also numpy arrays from pandas
    kind = (answer_type or "").strip().lower() or infer_answer_type(gold, choices)
    if kind not in _MATCHERS:
        raise ValueError(f"unknown answer_type {kind!r}; expected one of {', '.join(ANSWER_TYPES)}")
    if pred is None:
        return 0.0
    return 1.0 if _MATCHERS[kind](pred, gold, choices or None) else 0.0


def _column(values: Sequence[Any] | None, n: int, name: str) -> list[Any]:
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


def accuracy(completions: Sequence[Any], answer: Sequence[Any], answer_type: Sequence[str | None] | None = None,
             choices: Sequence[Sequence[str] | None] | None = None, **kwargs: Any) -> list[float | None]:
    """TRL reward: 1.0 per completion whose final answer matches `answer`, 0.0 otherwise, None without one."""
    n = len(completions)
    answers = _column(answer, n, "answer")
    types, options = _column(answer_type, n, "answer_type"), _column(choices, n, "choices")
    return [score_answer(extract_answer(completion_text(c)), a, t, o)
            for c, a, t, o in zip(completions, answers, types, options, strict=True)]
