"""Signals of reward hacking in a set of scored completions.

A policy optimises whatever the rewards actually pay for. These shares, printed by `score` and kept
in its manifest, show the usual ways it learns to be paid without doing the task; watch them rise
between checkpoints:

    answer_outside_tag    no `<answer>` block outside `<think>`, yet a `\\boxed{}` or a whole-token number
                          is there: what the lenient rewards (`accuracy_lenient`) would pay for
    answer_in_think_only  an `<answer>` or `\\boxed{}` inside `<think>` and none outside: an answer
                          the graders (rightly) ignore
    think_empty           a `<think>` block with nothing in it
    think_trivial         think blocks with some text but fewer than `MIN_THINK_WORDS` words
                          (`<think>.</think>`, `<think>ok</think>`): reasoning in name only; the
                          strict `format` reward pays neither
    duplicate_completions completions identical to an earlier one of the same group (prompt)
    identical_groups      groups whose completions are all the same: zero advantage, nothing learned
    reward_length_corr    Pearson correlation of total reward and num_tokens over all rows
    reward_length_corr_within  the same within groups (both centred on their group's mean), which
                          is what GRPO's advantages see; strongly positive = length is being paid for

Shares are of rows (of groups with more than one row for identical_groups); a share of nothing, and a
correlation where either side is constant, is NaN (null in the manifest).

Examples:
    >>> d = Diagnostics()
    >>> d.add(["<think></think><answer>4</answer>", "so 4", "so 4", "<think><answer>4</answer></think>"],
    ...       groups=[0, 0, 0, 1], lengths=[10, 20, 20, 30], rewards=[1.0, 0.5, 0.5, 0.0])
    >>> s = d.summary()
    >>> s["answer_outside_tag"], s["think_empty"], s["duplicate_completions"], s["answer_in_think_only"]
    (0.5, 0.25, 0.25, 0.25)
    >>> s["think_trivial"]
    0.0
"""

from __future__ import annotations

import hashlib
import math
import re
from array import array
from collections.abc import Sequence

from rftcli.rewards.format import MIN_THINK_WORDS, is_trivial_think
from rftcli.rewards.text import last_boxed, last_number, strip_think

_ANSWER_BLOCK = re.compile(r"<answer>.*?</answer>", re.DOTALL)
_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
KEYS = ("answer_outside_tag", "answer_in_think_only", "think_empty", "think_trivial", "duplicate_completions",
        "identical_groups",
        "reward_length_corr", "reward_length_corr_within")


def think_parts(text: str) -> list[str]:
    """The reasoning in `text`: closed think blocks, text before an orphan `</think>`, and the tail of
    an unclosed `<think>` (the same parts `strip_think` removes)."""
    if "think>" not in text:
        return []
    parts = _THINK_BLOCK.findall(text)
    rest = _THINK_BLOCK.sub(" ", text)
    close = rest.rfind("</think>")
    if close != -1:
        parts.append(rest[:close])
        rest = rest[close + len("</think>"):]
    open_ = rest.find("<think>")
    if open_ != -1:
        parts.append(rest[open_ + len("<think>"):])
    return parts


def answer_flags(text: str) -> tuple[bool, bool, bool, bool]:
    """(answer outside the tag, answer in think only, empty think, trivial think) for one completion."""
    visible = strip_think(text)
    tagged = _ANSWER_BLOCK.search(visible) is not None
    outside = not tagged and (last_boxed(visible) is not None or last_number(visible) is not None)
    thinking = think_parts(text)
    in_think = not tagged and last_boxed(visible) is None and any(
        _ANSWER_BLOCK.search(p) or "\\boxed{" in p for p in thinking)
    empty = bool(thinking) and all(not p.strip() for p in thinking)
    trivial = not empty and bool(thinking) and is_trivial_think(" ".join(thinking), MIN_THINK_WORDS)
    return outside, in_think, empty, trivial


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    n = len(xs)
    if n < 2:
        return math.nan
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 1e-12 or syy <= 1e-12:
        return math.nan
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / math.sqrt(sxx * syy)


class Diagnostics:
    """Accumulates rows batch by batch; `summary()` gives the shares and correlations. Keeps 8-byte
    digests of completions (not their text) and three numbers per row, so memory stays small."""

    def __init__(self):
        self.rows = 0
        self._flags = [0, 0, 0, 0]
        self._duplicates = 0
        self._seen: dict[int, set[bytes]] = {}
        self._lengths = array("d")
        self._rewards = array("d")
        self._groups = array("q")

    def add(self, texts: Sequence[str], groups: Sequence[int], lengths: Sequence[float],
            rewards: Sequence[float]) -> None:
        for text, group in zip(texts, groups, strict=True):
            for k, flag in enumerate(answer_flags(text)):
                self._flags[k] += flag
            seen = self._seen.setdefault(group, set())
            key = hashlib.blake2b(text.strip().encode(), digest_size=8).digest()
            self._duplicates += key in seen
            seen.add(key)
        self.rows += len(texts)
        self._lengths.extend(float(v) for v in lengths)
        self._rewards.extend(float(v) for v in rewards)
        self._groups.extend(groups)

    def summary(self) -> dict[str, float]:
        rows = self.rows or math.nan  # no rows: every share undefined
        sizes: dict[int, int] = {}
        for g in self._groups:
            sizes[g] = sizes.get(g, 0) + 1
        multi = [g for g, size in sizes.items() if size > 1]
        identical = sum(1 for g in multi if len(self._seen[g]) == 1)
        return {
            "answer_outside_tag": self._flags[0] / rows,
            "answer_in_think_only": self._flags[1] / rows,
            "think_empty": self._flags[2] / rows,
            "think_trivial": self._flags[3] / rows,
            "duplicate_completions": self._duplicates / rows,
            "identical_groups": identical / len(multi) if multi else math.nan,
            "reward_length_corr": pearson(self._lengths, self._rewards),
            "reward_length_corr_within": pearson(*self._centred()),
        }

    def _centred(self) -> tuple[list[float], list[float]]:
        sums: dict[int, list[float]] = {}
        for g, x, y in zip(self._groups, self._lengths, self._rewards, strict=True):
            s = sums.setdefault(g, [0.0, 0.0, 0])
            s[0] += x
            s[1] += y
            s[2] += 1
        xs, ys = [], []
        for g, x, y in zip(self._groups, self._lengths, self._rewards, strict=True):
            s = sums[g]
            xs.append(x - s[0] / s[2])
            ys.append(y - s[1] / s[2])
        return xs, ys
