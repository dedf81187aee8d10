"""Format rewards: did the completion think in `<think>` and then answer in `<answer>`?

`format_strict` (alias `format`) is 1.0 iff the whole completion, stripped, is
`<think>...</think>` then optional whitespace then `<answer>...</answer>`, each tag exactly once, and
each block holding some non-whitespace text (stricter than the common `.+?` regex, which accepts
`<think> </think>`). `format_lenient` is 1.0 if a `<think>...</think>` block is followed, anywhere
later, by an `<answer>...</answer>` block; text around and between them is allowed, and blocks may be
empty. Both are a few string scans per row (well over 50k rows/s).

Chat templates that put `<think>` into the prompt (Qwen3, DeepSeek-R1) leave completions without the
opening tag: these score 0 under both rules; train with a template that lets the model open it.

Examples:
    >>> format_strict(["<think>2+2</think>\\n<answer>4</answer>", "<answer>4</answer>"])
    [1.0, 0.0]
    >>> format_lenient(["Sure. <think>2+2</think> so <answer>4</answer> done"])
    [1.0]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rftcli.rewards.text import completion_text

# With each tag present exactly once, `\s*\S.*?` before a closing tag can only mean non-empty content.
_STRICT = re.compile(r"<think>\s*\S.*?</think>\s*<answer>\s*\S.*?</answer>", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def is_strict_format(text: str) -> bool:
    """The whole (stripped) text is exactly one think block, then exactly one answer block."""
    text = text.strip()
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    return all(text.count(tag) == 1 for tag in _TAGS) and _STRICT.fullmatch(text) is not None


def is_lenient_format(text: str) -> bool:
    """Some think block, then later some answer block (earliest matches, so one linear scan)."""
    pos = 0
    for tag in _TAGS:
        pos = text.find(tag, pos)
        if pos == -1:
            return False
        pos += len(tag)
    return True


def format_strict(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """TRL reward: 1.0 for exactly `<think>...</think>` then `<answer>...</answer>`, else 0.0."""
    return [1.0 if is_strict_format(completion_text(c)) else 0.0 for c in completions]


def format_lenient(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """TRL reward: 1.0 when a think block is followed somewhere by an answer block, else 0.0."""
    return [1.0 if is_lenient_format(completion_text(c)) else 0.0 for c in completions]


format = format_strict  # noqa: A001  (the name users type; shadows the builtin in this module only)
