"""The accuracy reward: 1.0 when the completion's final answer matches the ground truth, else 0.0.

Reads the dataset columns `answer` (ground truth as text), `answer_type`, `choices` and `metadata`; other
columns TRL passes (prompts, completion_ids, trainer_state, ...) are ignored. For answer types text and
number, a row's accepted alternatives - the list `answers` in its `metadata` JSON object, which
prepare-data fills for list answers, VQA, ChartQA and OCRBench (docs/data.md) - are paid as `answer` is:
the completion's one answer must match `answer` or any of them (`accepted_answers`). Choice, box and math
rows compare with `answer` alone. The final answer is found by
`rftcli.rewards.text.find_answer` under the extraction policy written there: never inside `<think>`,
only from the answer slot unless a lenient variant is asked for, and two different answers in the slot
are no answer. No answer scores 0.0; a row without a ground truth abstains (None). The variants differ
only in where they look:
    accuracy          the answer slot: `<answer>`, else `\\boxed{}` (the default; `accuracy_boxed` is the
                      same reward under its old name)
    accuracy_strict   `<answer>` only
    accuracy_lenient  the slot, else the last "answer is B" / "(B)" for choice questions, else the last
                      whole-token number (opt-in: it pays for numbers written anywhere)
`make_accuracy(extract, percent)` builds one for a file of your own, also with another reading of a
percent sign on one side only (see `rftcli.rewards.numeric`).

How each `answer_type` compares (a missing type is inferred from the answer, see `infer_answer_type`):
    number  `parse_number` on both sides, relative tolerance `REL_TOL`: "1,000" = "1000", "x = 3" = "3",
            "3 cm" = "3", "1/2" = "\\frac12" = "0.5", "50%" = "50" = "0.5"; "3.0001" != "3". A short
            sentence stating one number counts ("There are 3 objects." = "There are three objects." =
            "3"); one stating two ("3 cubes and 4 spheres") does not. A prediction that is not a plain
            number but looks like math ("\\sqrt{4}") goes to math_verify.
    choice  the option letter in its common forms - "B", "(B)", "B.", "B) text", "Option B", "the
            answer is B" - or the option's text, compared after LaTeX normalisation (spacing, braces
            around one symbol, `\\left`/`\\right`, `\\dfrac` = `\\frac`, degrees dropped:
            "5\\sqrt{2}" is the option "5 \\sqrt { 2 }") or numerically when both are numbers or simple
            formulas ("\\sqrt{50}" is the option "5\\sqrt{2}"). An answer that names two options ("B or C",
            "B. <option C's text>") is wrong. The ground truth may be a letter or the option text.
    text    exact match after lower-casing and dropping punctuation and extra whitespace.
    math    identical text (also after LaTeX normalisation); numbers as above when both sides are
            numbers; text rules when either side has words ("No solution." = "no solution"); else
            `rftcli.rewards.mathcheck.math_equal`: simple formulas numerically, the rest with
            math_verify (`\\frac12` = `0.5`, `2x+1` = `1+2x`) under a deadline. math_verify itself
            rounds to 6 decimals, so "0.333333" = "1/3" there. Decided cases: a constant expression
            equals its value (`e^{i\\pi}` = `-1`, as `\\sqrt{8}` = `2\\sqrt{2}`); a lone variable on the
            left of an equation is a label (`y=2x+1` = `2x+1`, as "x = 3" = "3").
    box     bounding boxes (`rftcli.rewards.grounding.parse_boxes`): as many as the ground truth has,
            each paired with IoU >= `BOX_IOU`. A ground truth holding a degenerate box (no width or no
            height) abstains: no prediction can overlap it. For graded credit use the `iou` reward.
A prediction with words in it ("3 or 4") never reaches math_verify, which would otherwise pick one
number out of a hedge.

Examples:
    >>> accuracy(["<think>..</think><answer>(B)</answer>"], answer=["B"], answer_type=["choice"])
    [1.0]
    >>> accuracy([[{"role": "assistant", "content": "<answer>x = 1,000</answer>"}]], answer=["1000"])
    [1.0]
    >>> accuracy(["<answer>\\\\frac{1}{2}</answer>", "<answer>0.51</answer>"], answer=["0.5", "0.5"])
    [1.0, 0.0]
    >>> accuracy(["So the answer is (B).", "\\\\boxed{B}"], answer=["B", "B"], answer_type=["choice"] * 2)
    [0.0, 1.0]
    >>> accuracy_lenient(["So the answer is (B).", "abc2def"], answer=["B", "2"], answer_type=["choice", "number"])
    [1.0, 0.0]
    >>> accuracy(["<answer>5\\\\sqrt{2}</answer>"], answer=["B"], answer_type=["choice"],
    ...          choices=[["5", "5 \\\\sqrt { 2 }", "10"]])
    [1.0]
    >>> accuracy(["<answer>sofa</answer>", "<answer>chair</answer>"], answer=["couch", "couch"],
    ...          answer_type=["text"] * 2, metadata=['{"answers": ["couch", "sofa"]}'] * 2)
    [1.0, 0.0]
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from rftcli.rewards.formula import formulas_equal
from rftcli.rewards.grounding import box_iou, box_score, degenerate, parse_boxes  # noqa: F401  (box_iou re-exported)
from rftcli.rewards.mathcheck import math_equal
from rftcli.rewards.numeric import ANSWER_PREFIX, REL_TOL, numbers_equal, parse_number, read_number  # noqa: F401
from rftcli.rewards.text import EXTRACT_MODES, LENIENT, STRICT, completion_text, find_answer
from rftcli.schema import ANSWER_TYPES

BOX_IOU = 0.5
"""Minimum intersection-over-union for a box answer to count as correct."""
ALTERNATIVE_TYPES = frozenset({"text", "number"})
"""Answer types whose accepted alternatives in `metadata.answers` are paid as `answer` is."""

_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")
_MATHY = re.compile(r"[\\^_{}=+\-*/()\[\]\d]")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox|boxed)\s*\{([^{}]*)\}")
_SPACE_LIKE = re.compile(r"[-‐‑‒–—―/_]+")
_NOT_WORD = re.compile(r"[^\w\s]+")
_CHOICE_PREFIX = re.compile(
    r"^(?:the\s+)?(?:final\s+|correct\s+|best\s+)?(?:answer|option|choice)\s*(?:is\s*:?|:)?\s*", re.IGNORECASE)
_LETTER_ONLY = re.compile(r"\(?([A-Za-z])\)?[.:)]?")
_LETTER_LEAD = re.compile(r"\(?([A-Z])[).:]\s+(\S.*)", re.DOTALL)
_LATEX_SPACING = re.compile(r"\\(?:left|right|displaystyle)(?![A-Za-z])|\\[!,;: ]|\$")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ\b|\\degree\b")
_ONE_SYMBOL_BRACES = re.compile(r"\{(\\[A-Za-z]+|\w)\}")
_OPTION_LABEL = re.compile(r"^\(?[A-Z][).:]\s+")
_BOX_GOLD = re.compile(r"\[\s*(?:-?\d+(?:\.\d+)?\s*,\s*){3}-?\d+(?:\.\d+)?\s*\]")


def normalize_text(text: str) -> str:
    """Lower case, `\\text{}` unwrapped, dashes and slashes as spaces, other punctuation dropped."""
    s = unicodedata.normalize("NFKC", _TEXT_WRAPPER.sub(r"\1", text)).replace("$", "").lower()
    return " ".join(_NOT_WORD.sub("", _SPACE_LIKE.sub(" ", s)).split())


def normalize_latex(text: str) -> str:
    """LaTeX without spacing: no whitespace, `\\left`/`\\right`, `$` or degree marks, `\\dfrac`/`\\tfrac` as
    `\\frac`, braces around one symbol dropped (`5 \\sqrt { 2 }` and `5\\sqrt2` both give `5\\sqrt2`)."""
    s = _LATEX_SPACING.sub("", unicodedata.normalize("NFKC", text))
    s = _DEGREES.sub("", s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac"))
    s = "".join(s.split())
    while True:
        unwrapped = _ONE_SYMBOL_BRACES.sub(r"\1", s)
        if unwrapped == s:
            return s.rstrip(".")
        s = unwrapped


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
    if _BOX_GOLD.fullmatch(answer.strip()) or (answer.strip()[:1] in "[{(" and parse_boxes(answer)):
        return "box"
    if _LETTER_ONLY.fullmatch(answer.strip()) and answer.strip().strip("().:").isupper():
        return "choice"
    return "math" if looks_like_math(answer) else "text"


def _same_option(pred: str, option: str) -> bool:
    """`pred` is the option's text: as text, as LaTeX without spacing, or numerically."""
    option = _OPTION_LABEL.sub("", option).strip()
    if not option:
        return False
    wanted = normalize_text(pred)
    if wanted and normalize_text(option) == wanted and not (looks_like_math(pred) or looks_like_math(option)):
        return True
    if normalize_latex(pred) == normalize_latex(option):
        return True
    if not (looks_like_math(pred) and looks_like_math(option)):
        return False
    p, o = parse_number(pred), parse_number(option)
    if p is not None and o is not None:
        return numbers_equal(p, o)
    return formulas_equal(pred, option) is True


def choice_letters(text: str, choices: Sequence[str] | None = None) -> set[str]:
    """Every option letter `text` names: "(b)" -> {B}, "B. Paris" -> {B}, option text -> its letter,
    "B. <option C's text>" -> {B, C}; empty when it names none."""
    s = _TEXT_WRAPPER.sub(r"\1", text).replace("$", "").replace("**", "").strip().rstrip(".").strip()
    s = _CHOICE_PREFIX.sub("", s)
    if m := _LETTER_ONLY.fullmatch(s):
        return {m.group(1).upper()}
    if m := _LETTER_LEAD.fullmatch(s):
        rest = m.group(2).strip()
        named = {m.group(1)}
        if r := _LETTER_ONLY.fullmatch(rest.rstrip(".").strip()):  # "B. C": two labels
            return named | {r.group(1).upper()}
        if choices:  # the text after the label must not be another option's
            named |= {chr(ord("A") + i) for i, option in enumerate(choices) if _same_option(rest, option)}
        return named
    if choices:
        return {chr(ord("A") + i) for i, option in enumerate(choices) if _same_option(s, option)}
    return set()


def choice_letter(text: str, choices: Sequence[str] | None = None) -> str | None:
    """The one option letter `text` names ("(b)" -> "B", "B. Paris" -> "B", option text -> its letter);
    None when it names none or several."""
    letters = choice_letters(text, choices)
    return letters.pop() if len(letters) == 1 else None


def _number_match(pred: str, gold: str, choices, percent: str = "either") -> bool:
    p, g = read_number(pred), read_number(gold)
    if p is not None and g is not None:
        return numbers_equal(p, g, percent)
    return looks_like_math(pred) and math_equal(pred, gold)


def _choice_match(pred: str, gold: str, choices, percent: str = "either") -> bool:
    want = choice_letter(gold, choices)
    if want is None:  # the ground truth is neither a letter nor one of the options
        return _text_match(pred, gold, choices)
    return choice_letter(pred, choices) == want


def _text_match(pred: str, gold: str, choices, percent: str = "either") -> bool:
    p = normalize_text(ANSWER_PREFIX.sub("", pred.strip()))
    return bool(p) and p == normalize_text(gold)


def _math_match(pred: str, gold: str, choices, percent: str = "either") -> bool:
    if "".join(pred.split()) == "".join(gold.split()) or normalize_latex(pred) == normalize_latex(gold):
        return True  # same text: no need for sympy
    p, g = parse_number(pred), parse_number(gold)
    if p is not None and g is not None:
        return numbers_equal(p, g, percent)
    if not (looks_like_math(pred) and looks_like_math(gold)):
        # Words on a side ("no solution"): compare as text. Never for formulas: normalising text
        # drops signs and operators, which would make "-7" equal "7".
        return _text_match(pred, gold, choices)
    return math_equal(pred, gold)


def _box_match(pred: str, gold: str, choices, percent: str = "either") -> bool:
    # Every gold box paired, and no extra box: more boxes than asked for is a hedge, not an answer.
    return box_score(parse_boxes(pred), parse_boxes(gold), BOX_IOU) == 1.0


_MATCHERS = {"number": _number_match, "choice": _choice_match, "text": _text_match, "math": _math_match,
             "box": _box_match}


def _resolve(answer: Any, answer_type: str | None, choices: Sequence[str] | None):
    """(gold text, kind, choices as strings), or None when there is no ground truth."""
    if answer is None or not str(answer).strip():
        return None
    gold = str(answer).strip()
    choices = [str(c) for c in choices] if choices is not None else None  # also numpy arrays from pandas
    kind = (answer_type or "").strip().lower() or infer_answer_type(gold, choices)
    if kind not in _MATCHERS:
        raise ValueError(f"unknown answer_type {kind!r}; expected one of {', '.join(ANSWER_TYPES)}")
    return gold, kind, choices or None


def _degenerate_gold(gold: str) -> bool:
    return any(degenerate(b) for b in parse_boxes(gold))


@lru_cache(maxsize=4096)
def _answers_in(metadata: str) -> tuple[str, ...]:
    try:
        meta = json.loads(metadata)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return ()
    return _answer_texts(meta.get("answers") if isinstance(meta, dict) else None)


def _answer_texts(values: Any) -> tuple[str, ...]:
    if not isinstance(values, list):
        return ()
    return tuple(str(v).strip() for v in values
                 if isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v).strip())


def accepted_answers(metadata: Any) -> tuple[str, ...]:
    """The accepted alternatives of a row: the texts and numbers of the list `answers` in its `metadata`
    (a JSON object as text, or a mapping); empty when there is none. The text is parsed only when it
    holds `"answers"`, so rows without alternatives cost one substring test."""
    if isinstance(metadata, str):
        return _answers_in(metadata) if '"answers"' in metadata else ()
    if isinstance(metadata, Mapping):
        return _answer_texts(metadata.get("answers"))
    return ()


def score_answer(pred: str | None, answer: Any, answer_type: str | None = None,
                 choices: Sequence[str] | None = None) -> float | None:
    """1.0 or 0.0 for one extracted prediction; None (abstain) when there is no ground truth."""
    resolved = _resolve(answer, answer_type, choices)
    if resolved is None:
        return None
    gold, kind, choices = resolved
    if kind == "box" and _degenerate_gold(gold):
        return None
    if pred is None:
        return 0.0
    return 1.0 if _MATCHERS[kind](pred, gold, choices) else 0.0


def score_completion(text: str, answer: Any, answer_type: str | None = None, choices: Sequence[str] | None = None,
                     extract: str = STRICT, percent: str = "either",
                     alternatives: Sequence[str] = ()) -> float | None:
    """1.0 or 0.0 for one completion's text, its answer found by extraction mode `extract`, a
    one-sided percent read as `percent` says (`rftcli.rewards.numeric`); None without a ground truth.
    For answer types text and number an answer matching one of `alternatives` (see `accepted_answers`)
    is right too."""
    resolved = _resolve(answer, answer_type, choices)
    if resolved is None:
        return None
    gold, kind, choices = resolved
    if kind == "box" and _degenerate_gold(gold):
        return None
    pred = find_answer(text, extract, kind)
    if pred is None:  # also two different answers in the slot, whatever the alternatives
        return 0.0
    match = _MATCHERS[kind]
    if match(pred, gold, choices, percent):
        return 1.0
    if kind in ALTERNATIVE_TYPES:
        return 1.0 if any(match(pred, alt, choices, percent) for alt in alternatives if alt != gold) else 0.0
    return 0.0


def _column(values: Sequence[Any] | None, n: int, name: str) -> list[Any]:
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


def _accuracy(completions: Sequence[Any], answer: Sequence[Any], answer_type: Sequence[str | None] | None,
              choices: Sequence[Sequence[str] | None] | None, extract: str,
              percent: str = "either", metadata: Sequence[Any] | None = None) -> list[float | None]:
    n = len(completions)
    answers = _column(answer, n, "answer")
    types, options = _column(answer_type, n, "answer_type"), _column(choices, n, "choices")
    metas = _column(metadata, n, "metadata")
    return [score_completion(completion_text(c), a, t, o, extract, percent, accepted_answers(m))
            for c, a, t, o, m in zip(completions, answers, types, options, metas, strict=True)]


def make_accuracy(extract: str = STRICT, percent: str = "either", name: str | None = None) -> Callable[..., list]:
    """An accuracy reward with extraction mode `extract` (tag, boxed, any or whole; see `find_answer`) and
    percent reading `percent` (either, fraction or literal; see `rftcli.rewards.numeric`), e.g. in a
    file: `accuracy_pct = make_accuracy(percent="fraction", name="accuracy_pct")`."""
    from rftcli.rewards.numeric import PERCENT_MODES

    if extract not in EXTRACT_MODES:
        raise ValueError(f"unknown extraction mode {extract!r}; expected one of {', '.join(EXTRACT_MODES)}")
    if percent not in PERCENT_MODES:
        raise ValueError(f"unknown percent mode {percent!r}; expected one of {', '.join(PERCENT_MODES)}")

    def reward(completions, answer, answer_type=None, choices=None, metadata=None, **kwargs):
        return _accuracy(completions, answer, answer_type, choices, extract, percent, metadata)

    reward.__name__ = reward.__qualname__ = name or f"accuracy_{extract}"
    reward.__doc__ = f"TRL reward: accuracy with answer extraction mode {extract!r}, percent mode {percent!r}."
    return reward


accuracy = make_accuracy(STRICT, name="accuracy")
accuracy.__doc__ = ("TRL reward: 1.0 per completion whose answer in the answer slot (`<answer>`, else `\\boxed{}`) "
                    "matches `answer` (or, for text and number answers, one in `metadata.answers`), 0.0 "
                    "otherwise, None without a ground truth.")
accuracy_boxed = accuracy
accuracy_strict = make_accuracy("tag", name="accuracy_strict")
accuracy_strict.__doc__ = "TRL reward: as `accuracy`, but only an answer inside `<answer>...</answer>` counts."
accuracy_lenient = make_accuracy(LENIENT, name="accuracy_lenient")
accuracy_lenient.__doc__ = ("TRL reward: as `accuracy`, but without an answer slot the last choice phrase or "
                            "whole-token number outside `<think>` counts (opt-in).")
