"""Reading an answer as a number, and comparing two numbers.

`parse_number` accepts what models and datasets write around a number and nothing more: thousands
separators ("1,000", LaTeX "1{,}000" or "1\\,000"), a sign, decimals, "1e-3", "1.5 \\times 10^{3}", a
fraction ("1/2", "\\frac{1}{2}", "\\frac12"), a percent sign or the word "percent", a unit of up to three
words after the number ("3 cm", "5 km/h", "2 square meters", "3\\text{ cm}", "90^\\circ"), and one
left-hand side ("x = 3", "The answer is 3"). Units are dropped, not converted: "300 cm" does not equal
"3 m". A second number or relation ("3 or 4", "3 apples and 4 pears", "x = 2 or x = 3") makes the text
unreadable, so hedging earns nothing.

`numbers_equal` compares two whole numbers exactly ("1000001" is not "1e6") and otherwise uses a relative
tolerance of `REL_TOL` (1e-6, with `ABS_TOL` for values near zero: "2.9999999" is "3"). When
exactly one side carries a percent sign, the setting `percent` (`PERCENT_MODES`) decides:
    either    (default) both readings count: "50%" equals "50" and "0.5"
    fraction  a percent is a share: "50%" equals "0.5", not "50"
    literal   the sign is dropped: "50%" equals "50", not "0.5"
When both or neither carry one, values are compared as written ("0.5" is not "50").

`sentence_number` reads the one number a short sentence states ("There are 3 objects.", "There are
three objects."): whole-token numbers (`rftcli.rewards.text.number_tokens`) and English number words up to
twenty, at most `MAX_SENTENCE_WORDS` words, no formula (`=`, `+`, `^`, `\\`, ...) and no negation ("not
3"). Two different values ("3 cubes and 4 spheres", "3 or 4", "twenty one") are a hedge: None.

Examples:
    >>> parse_number("x = 1,000 cm")
    Number(value=1000.0, percent=False)
    >>> parse_number("\\\\frac{1}{2}")
    Number(value=0.5, percent=False)
    >>> numbers_equal(parse_number("50%"), parse_number("0.5"))
    True
    >>> numbers_equal(parse_number("50%"), parse_number("0.5"), percent="literal")
    False
    >>> numbers_equal(parse_number("3.0001"), parse_number("3"))
    False
    >>> parse_number("3 or 4") is None
    True
    >>> sentence_number("There are three objects."), sentence_number("I see 3 cubes and 4 spheres")
    (Number(value=3.0, percent=False), None)
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

REL_TOL = 1e-6
"""Relative tolerance for numeric answers."""
ABS_TOL = 1e-9
"""Absolute tolerance, so that answers near zero can match at all."""
PERCENT_MODES = ("either", "fraction", "literal")
MAX_SENTENCE_WORDS = 25
"""Longer answers are not read as a sentence stating a number."""
NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NEGATIONS = {"not", "never", "isn't", "aren't", "wasn't", "weren't", "cannot", "can't", "neither", "nor", "except"}
_FORMULA = re.compile(r"[=+*^\\<>{}|≈]")
_WORD_EDGE = "()[]{},.;:!?\"'*`"


class Number(NamedTuple):
    value: float
    percent: bool


_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?"
_WORD = r"[A-Za-zµμΩ]+(?:\^\{?\d\}?)?(?:/[A-Za-zµμΩ]+(?:\^\{?\d\}?)?)?"
_PLAIN = re.compile(rf"([+-]?)\s*({_NUM})(?:\s*/\s*({_NUM}))?\s*(%?)\s*((?:{_WORD})(?:\s+{_WORD}){{0,2}})?")
_SCIENTIFIC = re.compile(rf"([+-]?)\s*({_NUM})\s*(?:\\times|\\cdot|×|\*|x)\s*10\s*\^\s*\{{?\s*([+-]?\d+)\s*\}}?\s*(%?)")
_FRAC = re.compile(rf"([+-]?)\s*\\[dt]?frac\s*(?:\{{\s*({_NUM})\s*\}}|(\d))\s*(?:\{{\s*({_NUM})\s*\}}|(\d))\s*(%?)")

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox|operatorname|boxed)\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree")
ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is\s*:?|:)\s*", re.IGNORECASE)
"""A leading "the answer is" / "final answer:", stripped before an answer is compared."""
_RELATION = re.compile(r"=|\\approx|≈")
_PERCENT_WORDS = {"percent", "per cent", "pct", "percentage points"}
_DROP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "{,}", "\\$", "$", "~")  # "\\$" before "$"


def _clean(text: str) -> str:
    s = text.strip().replace("−", "-").replace("\\%", "%").replace("\\ ", " ")
    for token in _DROP:
        s = s.replace(token, "")
    s = _TEXT_WRAPPER.sub(r" \1 ", s)
    s = _DEGREES.sub("", s)
    relations = _RELATION.findall(s)
    if len(relations) == 1:  # "x = 3" -> "3"; with two ("x = 2 or x = 3") it stays unreadable
        s = s[s.rindex(relations[0]) + len(relations[0]):]
    s = ANSWER_PREFIX.sub("", s.strip())
    return s.strip().strip("*").rstrip(".").strip()


def _to_float(num: str) -> float:
    return float(num.replace(",", ""))


def parse_number(text: str | None) -> Number | None:
    """`text` read as a single number (see the module docstring), or None."""
    if not text or len(text) > 200:
        return None
    s = _clean(text)
    try:
        if m := _PLAIN.fullmatch(s):
            sign, num, den, pct, unit = m.groups()
            value = _to_float(num) / (_to_float(den) if den else 1.0)
            percent = bool(pct) or (unit or "").lower() in _PERCENT_WORDS
        elif m := _SCIENTIFIC.fullmatch(s):
            sign, num, exp, pct = m.groups()
            value, percent = _to_float(num) * 10.0 ** int(exp), bool(pct)
        elif m := _FRAC.fullmatch(s):
            sign, num_braced, num_digit, den_braced, den_digit, pct = m.groups()
            value = _to_float(num_braced or num_digit) / _to_float(den_braced or den_digit)
            percent = bool(pct)
        else:
            return None
    except (ZeroDivisionError, OverflowError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return Number(-value if sign == "-" else value, percent)


def sentence_number(text: str | None) -> Number | None:
    """The one number a short sentence states (see the module docstring), or None."""
    from rftcli.rewards.text import number_tokens

    if not text or len(text) > 400:
        return None
    words = text.split()
    if len(words) > MAX_SENTENCE_WORDS or _FORMULA.search(text):
        return None
    found: set[Number] = set()
    for raw in words:
        word = raw.strip(_WORD_EDGE).lower()
        if word in _NEGATIONS:
            return None
        if word in NUMBER_WORDS:
            found.add(Number(float(NUMBER_WORDS[word]), False))
        elif any(c.isdigit() for c in word):
            for token in number_tokens(word):
                number = parse_number(token)
                if number is not None:
                    found.add(number)
    return found.pop() if len(found) == 1 else None


def read_number(text: str | None) -> Number | None:
    """`parse_number`, else `sentence_number`: the number an answer states, or None."""
    number = parse_number(text)
    return number if number is not None else sentence_number(text)


def _close(a: float, b: float) -> bool:
    if a.is_integer() and b.is_integer():  # a relative tolerance would let 1000001 pass for 1000000
        return a == b
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def numbers_equal(a: Number, b: Number, percent: str = "either") -> bool:
    """Equal within tolerance; a percent on one side only is read as `percent` says (see above)."""
    if a.percent == b.percent:
        return _close(a.value, b.value)
    if percent not in PERCENT_MODES:
        raise ValueError(f"unknown percent mode {percent!r}; expected one of {', '.join(PERCENT_MODES)}")
    pct, other = (a, b) if a.percent else (b, a)
    literal, fraction = _close(pct.value, other.value), _close(pct.value / 100.0, other.value)
    return {"either": literal or fraction, "fraction": fraction, "literal": literal}[percent]
