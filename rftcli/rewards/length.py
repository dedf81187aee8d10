"""Length shaping: DAPO's soft overlong penalty, a cosine length reward, and a repetition penalty.

Lengths are in tokens: `len(completion_ids)` when TRL passes token ids (train-grpo), else the
`num_tokens` column (rollouts, scores, eval). The length limit L_max comes from the `max_new_tokens`
column of a rollouts table, or from the factory argument `max_tokens`; train-grpo passes neither, so
there build the reward in a file of your own and pass it as `-r my_rewards.py:overlong`:

    from rftcli.rewards.length import soft_overlong
    overlong = soft_overlong(max_tokens=512, cache_tokens=128)   # the trainer's --max-completion-length

`overlong` - DAPO (Yu et al. 2025, eq. 13), a penalty added to the task reward:
    0 for L <= L_max - L_cache; (L_max - L_cache - L) / L_cache, falling linearly to -1 at L = L_max;
    -1 beyond. L_cache defaults to 20% of L_max (DAPO: 4096 of 20480).
`cosine_length` - Yeo et al. 2025 ("Demystifying long chain-of-thought reasoning"), with open-r1's
    defaults; it *replaces* `accuracy`: a correct answer earns 1.0 when short, falling along a
    half cosine to 0.5 at L_max; a wrong one earns -1.0 when short, rising to -0.5 at L_max (so
    when wrong, thinking longer costs less). Correctness is `accuracy`'s; rows it abstains on abstain.
`repetition` - open-r1's n-gram penalty: -(1 - distinct / total) word 3-grams of the whole completion,
    in [-1, 0]; 0 for completions shorter than three words.

Examples:
    >>> overlong(["a", "b", "c"], num_tokens=[80, 90, 100], max_new_tokens=[100, 100, 100])
    [0.0, -0.5, -1.0]
    >>> cosine_length(["<answer>4</answer>", "<answer>4</answer>", "<answer>5</answer>"],
    ...               answer=["4", "4", "4"], num_tokens=[0, 100, 0], max_new_tokens=[100, 100, 100])
    [1.0, 0.5, -1.0]
    >>> repetition(["the cat sat on the mat", "go go go go go"])
    [0.0, -0.6666666666666667]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from rftcli.rewards.accuracy import accepted_answers, score_completion
from rftcli.rewards.text import completion_text

CACHE_FRACTION = 0.2
"""Default overlong buffer L_cache as a share of L_max."""


def token_lengths(n: int, completion_ids: Sequence[Any] | None = None,
                  num_tokens: Sequence[Any] | None = None, who: str = "reward") -> list[int]:
    """Tokens per completion: from TRL's `completion_ids`, else the `num_tokens` column."""
    if completion_ids is not None:
        values = [len(ids) for ids in completion_ids]
    elif num_tokens is not None:
        values = [int(v) for v in num_tokens]
    else:
        raise ValueError(f"{who} needs token counts: the num_tokens column (rollouts) or TRL's completion_ids")
    if len(values) != n:
        raise ValueError(f"{who}: {len(values)} token counts for {n} completions")
    return values


def _limits(n: int, max_tokens: int | None, max_new_tokens: Sequence[Any] | None, who: str) -> list[int]:
    if max_tokens is not None:
        return [max_tokens] * n
    if max_new_tokens is None:
        raise ValueError(f"{who} needs the length limit: a max_new_tokens column (rollouts), or build it in a "
                         f"file with max_tokens=..., e.g. soft_overlong(max_tokens=512)")
    if len(max_new_tokens) != n:
        raise ValueError(f"{who}: column 'max_new_tokens' has {len(max_new_tokens)} values for {n} completions")
    return [int(v) for v in max_new_tokens]


def overlong_penalty(length: int, max_tokens: int, cache_tokens: int) -> float:
    """DAPO's soft overlong punishment for one completion of `length` tokens."""
    if length > max_tokens:
        return -1.0
    expected = max_tokens - cache_tokens
    if length <= expected or cache_tokens <= 0:
        return 0.0
    return (expected - length) / cache_tokens


def soft_overlong(max_tokens: int | None = None, cache_tokens: int | None = None,
                  name: str = "overlong") -> Callable[..., list]:
    """DAPO's soft overlong penalty with L_max = `max_tokens` (default: the max_new_tokens column) and
    L_cache = `cache_tokens` (default: `CACHE_FRACTION` of L_max)."""
    if max_tokens is not None and max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if cache_tokens is not None and cache_tokens < 0:
        raise ValueError(f"cache_tokens must be >= 0, got {cache_tokens}")

    def reward(completions: Sequence[Any], completion_ids: Sequence[Any] | None = None,
               num_tokens: Sequence[Any] | None = None, max_new_tokens: Sequence[Any] | None = None,
               **kwargs: Any) -> list[float]:
        n = len(completions)
        lengths = token_lengths(n, completion_ids, num_tokens, name)
        limits = _limits(n, max_tokens, max_new_tokens, name)
        return [overlong_penalty(length, limit, round(CACHE_FRACTION * limit) if cache_tokens is None else cache_tokens)
                for length, limit in zip(lengths, limits, strict=True)]

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = "TRL reward: DAPO's soft overlong penalty, 0 down to -1 over the last L_cache tokens."
    return reward


def cosine_scaled(length: int, max_tokens: int, correct: bool, min_wrong: float = -1.0, max_wrong: float = -0.5,
                  min_correct: float = 0.5, max_correct: float = 1.0) -> float:
    """The cosine length reward of one completion (open-r1's `get_cosine_scaled_reward`)."""
    progress = min(max(length / max_tokens, 0.0), 1.0) if max_tokens > 0 else 1.0
    # Short completions get `short`, ones at L_max get `long`; a half cosine in between.
    short, long = (max_correct, min_correct) if correct else (min_wrong, max_wrong)
    return long + 0.5 * (short - long) * (1.0 + math.cos(progress * math.pi))


def make_cosine_length(max_tokens: int | None = None, min_wrong: float = -1.0, max_wrong: float = -0.5,
                       min_correct: float = 0.5, max_correct: float = 1.0, extract: str = "boxed",
                       name: str = "cosine_length") -> Callable[..., list]:
    """A cosine length reward with the given end values; `extract` is accuracy's extraction mode."""

    def reward(completions: Sequence[Any], answer: Sequence[Any], answer_type: Sequence[Any] | None = None,
               choices: Sequence[Any] | None = None, completion_ids: Sequence[Any] | None = None,
               num_tokens: Sequence[Any] | None = None, max_new_tokens: Sequence[Any] | None = None,
               metadata: Sequence[Any] | None = None, **kwargs: Any) -> list[float | None]:
        n = len(completions)
        lengths = token_lengths(n, completion_ids, num_tokens, name)
        limits = _limits(n, max_tokens, max_new_tokens, name)
        types = list(answer_type) if answer_type is not None else [None] * n
        options = list(choices) if choices is not None else [None] * n
        metas = list(metadata) if metadata is not None else [None] * n
        if not len(answer) == len(types) == len(options) == len(metas) == n:
            raise ValueError(f"{name}: answer columns do not have {n} values")
        out: list[float | None] = []
        for c, gold, kind, opts, meta, length, limit in zip(completions, answer, types, options, metas, lengths,
                                                            limits, strict=True):
            verdict = score_completion(completion_text(c), gold, kind, opts, extract,
                                       alternatives=accepted_answers(meta))
            out.append(None if verdict is None else cosine_scaled(length, limit, verdict == 1.0, min_wrong,
                                                                  max_wrong, min_correct, max_correct))
        return out

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = "TRL reward: accuracy scaled by length along a half cosine (short correct best)."
    return reward


def repetition_penalty(text: str, ngram: int = 3, max_penalty: float = -1.0) -> float:
    """`max_penalty` times the share of repeated word n-grams in `text` (0 when shorter than n words)."""
    words = text.lower().split()
    if len(words) < ngram:
        return 0.0
    grams = list(zip(*(words[i:] for i in range(ngram)), strict=False))  # ragged on purpose
    return (1.0 - len(set(grams)) / len(grams)) * max_penalty + 0.0  # + 0.0: no -0.0 for no repeats


def make_repetition(ngram: int = 3, max_penalty: float = -1.0, name: str = "repetition") -> Callable[..., list]:
    """An n-gram repetition penalty (`ngram` words, scaled to `max_penalty`)."""
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")

    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [repetition_penalty(completion_text(c), ngram, max_penalty) for c in completions]

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = f"TRL reward: -(share of repeated word {ngram}-grams), in [{max_penalty}, 0]."
    return reward


overlong = soft_overlong()
cosine_length = make_cosine_length()
repetition = make_repetition()
