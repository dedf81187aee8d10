"""The count reward: 1.0 when the completion's final answer is the right whole number of things.

For counting tasks ("How many cups are on the table?"). The answer comes from the answer slot -
`<answer>`, else `\\boxed{}` - as `rftcli.rewards.text` defines it; `count_lenient` also falls back to
the last whole-token number outside `<think>`. It is read as a count when it is a non-negative whole
number, written in digits ("3", "3.0", "1,000", "3 cups", "x = 3") or as an English number word up to
twenty ("three", "Three cups"), alone or in a short sentence ("There are 3 objects.", "There are three
objects."; `rftcli.rewards.numeric.sentence_number`). Anything else - "2.5", "3 or 4", "3 cubes and
4 spheres", "-1", "50%", "abc3" - scores 0. A row whose ground truth is not a count, or whose
`answer_type` is given and is not `number`, abstains (None), so `count` can sit beside `accuracy` on a
mixed dataset. Unlike `accuracy` it never reads a percent as a fraction and never calls math_verify.
As in `accuracy`, a count among the row's accepted alternatives (`metadata.answers`, see
`rftcli.rewards.accuracy.accepted_answers`) is paid as `answer` is.

Examples:
    >>> count(["<answer>three</answer>", "<answer>There are 3 cups.</answer>", "I see 4", "<answer>2.5</answer>"],
    ...       answer=["3", "3", "4", "3"])
    [1.0, 1.0, 0.0, 0.0]
    >>> count_lenient(["I see 4", "file_4.png"], answer=["4", "4"])
    [1.0, 0.0]
    >>> count(["<answer>3</answer>", "<answer>3</answer>"], answer=["Paris", "3"], answer_type=["text", "choice"])
    [None, None]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from rftcli.rewards.accuracy import accepted_answers
from rftcli.rewards.numeric import NUMBER_WORDS, parse_number, sentence_number
from rftcli.rewards.text import EXTRACT_MODES, LENIENT, STRICT, completion_text, find_answer

_HEDGES = {"or", "and", "to", "maybe"}
_WORD_COUNT = re.compile(r"(?:(?:there\s+(?:are|is)|the\s+answer\s+is|answer:?)\s+)?([a-z]+)(?:\s+[a-z]+){0,3}")


def _whole(number) -> int | None:
    if number is None or number.percent or number.value < 0 or number.value != int(number.value):
        return None
    return int(number.value)


def parse_count(text: str | None) -> int | None:
    """`text` read as a count (see the module docstring), or None."""
    if not text:
        return None
    number = parse_number(text)
    if number is not None:
        return _whole(number)
    m = _WORD_COUNT.fullmatch(text.strip().rstrip(".").strip().lower())
    if m and m.group(1) in NUMBER_WORDS:
        rest = m.group(0)[m.end(1):].split()  # "cups" is a unit; "one", "or", "and" make a hedge ("one or two")
        return None if any(w in NUMBER_WORDS or w in _HEDGES for w in rest) else NUMBER_WORDS[m.group(1)]
    return _whole(sentence_number(text))


def _alternative_counts(metadata: Any) -> set[int]:
    return {c for c in map(parse_count, accepted_answers(metadata)) if c is not None}


def make_count(extract: str = STRICT, name: str | None = None) -> Callable[..., list]:
    """A count reward with answer extraction mode `extract` (see `rftcli.rewards.text.find_answer`)."""
    if extract not in EXTRACT_MODES:
        raise ValueError(f"unknown extraction mode {extract!r}; expected one of {', '.join(EXTRACT_MODES)}")

    def reward(completions: Sequence[Any], answer: Sequence[Any], answer_type: Sequence[Any] | None = None,
               metadata: Sequence[Any] | None = None, **kwargs: Any) -> list[float | None]:
        n = len(completions)
        for name, column in (("answer", answer), ("metadata", metadata)):
            if column is not None and len(column) != n:
                raise ValueError(f"column {name!r} has {len(column)} values for {n} completions")
        types = list(answer_type) if answer_type is not None else [None] * n
        metas = list(metadata) if metadata is not None else [None] * n
        out: list[float | None] = []
        for completion, gold_text, kind, meta in zip(completions, answer, types, metas, strict=True):
            gold = None if kind not in (None, "", "number") else parse_count(None if gold_text is None else str(gold_text))
            if gold is None:
                out.append(None)
                continue
            pred = parse_count(find_answer(completion_text(completion), extract))
            out.append(1.0 if pred is not None and (pred == gold or pred in _alternative_counts(meta)) else 0.0)
        return out

    reward.__name__ = reward.__qualname__ = name or ("count" if extract == STRICT else f"count_{extract}")
    reward.__doc__ = (f"TRL reward: 1.0 when the final answer (extraction mode {extract!r}) is the ground-truth "
                      "count, 0.0 otherwise, None for rows whose ground truth is not a count.")
    return reward


count = make_count()
count_lenient = make_count(LENIENT, name="count_lenient")
