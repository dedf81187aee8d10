"""The count reward: 1.0 when the completion's final answer is the right whole number of things.

For counting tasks ("How many cups are on the table?"). The answer comes from `<answer>`, else the
last `\\boxed{}`, else the last number outside `<think>`; it is read as a count when it is a
non-negative whole number, written in digits ("3", "3.0", "1,000", "3 cups", "x = 3") or as one
English number word up to twenty ("three", "Three cups"). Anything else - "2.5", "3 or 4", "-1",
"50%" - scores 0. A row whose ground truth is not a count abstains (None), so `count` can sit beside
`accuracy` on a mixed dataset. Unlike `accuracy` with answer_type number it never reads a percent
as a fraction and never calls math_verify.

Examples:
    >>> count(["<answer>three</answer>", "<answer>3 cups</answer>", "I see 4", "<answer>2.5</answer>"],
    ...       answer=["3", "3", "4", "3"])
    [1.0, 1.0, 1.0, 0.0]
    >>> count(["<answer>3</answer>"], answer=["Paris"])
    [None]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rftcli.rewards.numeric import parse_number
from rftcli.rewards.text import completion_text, find_answer

NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_HEDGES = {"or", "and", "to", "maybe"}
_WORD_COUNT = re.compile(r"(?:(?:there\s+(?:are|is)|the\s+answer\s+is|answer:?)\s+)?([a-z]+)(?:\s+[a-z]+){0,3}")


def parse_count(text: str | None) -> int | None:
    """`text` read as a count (see the module docstring), or None."""
    if not text:
        return None
    number = parse_number(text)
    if number is not None:
        if number.percent or number.value < 0 or number.value != int(number.value):
            return None
        return int(number.value)
    m = _WORD_COUNT.fullmatch(text.strip().rstrip(".").strip().lower())
    if not m or m.group(1) not in NUMBER_WORDS:
        return None
    rest = m.group(0)[m.end(1):].split()  # "cups" is a unit; "one", "or", "and" make a hedge ("one or two")
    return None if any(w in NUMBER_WORDS or w in _HEDGES for w in rest) else NUMBER_WORDS[m.group(1)]


def count(completions: Sequence[Any], answer: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """TRL reward: 1.0 when the final answer is the ground-truth count, 0.0 otherwise, None for rows
    whose ground truth is not a count."""
    if len(answer) != len(completions):
        raise ValueError(f"column 'answer' has {len(answer)} values for {len(completions)} completions")
    out: list[float | None] = []
    for completion, gold_text in zip(completions, answer, strict=True):
        gold = parse_count(None if gold_text is None else str(gold_text))
        if gold is None:
            out.append(None)
            continue
        pred = parse_count(find_answer(completion_text(completion), "any"))
        out.append(1.0 if pred == gold else 0.0)
    return out
