"""Format rewards: did the completion think in `<think>` and then answer in `<answer>`?

`format_strict` (alias `format`) is 1.0 iff the whole completion, stripped, is
`<think>...</think>` then optional whitespace then `<answer>...</answer>`, each tag exactly once, the
answer block holding some non-whitespace text and the think block at least `MIN_THINK_WORDS` words
(runs of letters or digits), so `<think>.</think>` or `<think>ok</think>` earns nothing: a think block
too short to hold reasoning is "trivial", and `score` counts those in its summary. `format_lenient` is
1.0 if a `<think>...</think>` block is followed, anywhere later, by an `<answer>...</answer>` block;
text around and between them is allowed, and blocks may be empty. `make_format(min_think_words=...)`
builds either with another minimum (0 keeps only the non-empty rule). Both are a few string scans per
row (well over 50k rows/s).

Chat templates that put `<think>` into the prompt (Qwen3, DeepSeek-R1) leave completions without the
opening tag: these score 0 under both rules; train with a template that lets the model open it.

Examples:
    >>> format_strict(["<think>2 + 2 is 4</think>\\n<answer>4</answer>", "<answer>4</answer>", "<think>.</think><answer>4</answer>"])
    [1.0, 0.0, 0.0]
    >>> format_lenient(["Sure. <think>2+2</think> so <answer>4</answer> done"])
    [1.0]
    >>> make_format(min_think_words=1)(["<think>ok</think><answer>4</answer>"])
    [1.0]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from rftcli.rewards.text import completion_text

MIN_THINK_WORDS = 3
"""Words (runs of letters or digits) a think block needs under the strict format rule."""

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_WORD = r"(?:[\W_]*[^\W_]+(?![^\W_]))"  # a run of letters or digits, and what separates it from the last


def _words(n: int) -> re.Pattern:
    return re.compile(_WORD + "{" + str(n) + "}")


_WORDS = {n: _words(n) for n in range(1, 9)}


def think_words_at_least(think: str, n: int) -> bool:
    """`think` holds at least `n` words (runs of letters or digits); stops reading after the n-th."""
    if n <= 0:
        return True
    pattern = _WORDS.get(n) or _words(n)
    return pattern.match(think) is not None


def is_trivial_think(think: str, min_words: int = MIN_THINK_WORDS) -> bool:
    """A think block's content too short to be reasoning (fewer than `min_words` words; empty counts)."""
    return not think_words_at_least(think, max(min_words, 1))


def is_strict_format(text: str, min_think_words: int = MIN_THINK_WORDS) -> bool:
    """The whole (stripped) text is exactly one think block of at least `min_think_words` words (and not
    empty), then exactly one answer block."""
    text = text.strip()
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    if not all(text.count(tag) == 1 for tag in _TAGS):
        return False
    # Each tag once, the text starting and ending with the outer ones: plain index arithmetic, no regex.
    close, open_ = text.index("</think>"), text.index("<answer>")
    if open_ < close or text[close + 8:open_].strip():
        return False
    think = text[7:close]
    return bool(think.strip()) and bool(text[open_ + 8:-9].strip()) and think_words_at_least(think, min_think_words)


def is_lenient_format(text: str) -> bool:
    """Some think block, then later some answer block (earliest matches, so one linear scan)."""
    pos = 0
    for tag in _TAGS:
        pos = text.find(tag, pos)
        if pos == -1:
            return False
        pos += len(tag)
    return True


def make_format(min_think_words: int = MIN_THINK_WORDS, lenient: bool = False,
                name: str | None = None) -> Callable[..., list]:
    """A format reward: the strict rule with a think block of at least `min_think_words` words, or
    (`lenient`) the lenient rule, which has no minimum."""
    if min_think_words < 0:
        raise ValueError(f"min_think_words must be >= 0, got {min_think_words}")

    if lenient:
        def reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
            return [1.0 if is_lenient_format(completion_text(c)) else 0.0 for c in completions]
    else:
        def reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
            return [1.0 if is_strict_format(completion_text(c), min_think_words) else 0.0 for c in completions]

    reward.__name__ = reward.__qualname__ = name or ("format_lenient" if lenient else "format_strict")
    reward.__doc__ = ("TRL reward: 1.0 when a think block is followed somewhere by an answer block, else 0.0."
                      if lenient else
                      f"TRL reward: 1.0 for exactly `<think>...</think>` (at least {min_think_words} words) then "
                      "`<answer>...</answer>`, else 0.0.")
    return reward


format_strict = make_format()
format_lenient = make_format(lenient=True)
format = format_strict  # noqa: A001  (the name users type; shadows the builtin in this module only)
