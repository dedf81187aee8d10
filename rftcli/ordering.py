"""Worst case first: the training stages' first step runs the longest sample (prompt, images and target by the
plan's estimate), so an out-of-memory comes in the first minute, not the third hour. The sampler's order is
otherwise kept: one swap, the same on every run, so a resumed run skips the same batches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rftcli.model_shape import read_model_config, shape
from rftcli.plan import Settings, row_patches, text_tokens


def longest_row(rows: list[Mapping[str, Any]], model: str) -> int | None:
    """The index of the row with the longest prompt (text and image tokens, by the same estimate as the plan),
    so the first step can run it; None when the model is not one the plan knows."""
    try:
        model_shape = shape(read_model_config(model), model)
    except ValueError:
        return None
    settings = Settings()
    best, index = -1, None
    for i, row in enumerate(rows):
        patches = row_patches(row, model_shape, settings)
        tokens = text_tokens(row.get("system") or "", row.get("prompt") or "") + patches // model_shape.merge ** 2
        tokens += len(row.get("response") or row.get("reasoning") or row.get("completion") or "") // 3
        if tokens > best:
            best, index = tokens, i
    return index


class FirstSampler:
    """A sampler's order with row `first` and the row it would have yielded first swapped everywhere: the same
    permutation on every run (so a resumed run skips the same batches), with the longest row in the first step."""

    def __init__(self, base: Any, first: int):
        self.base, self.first = base, first

    def __iter__(self):
        order = list(self.base)
        if not order or self.first not in order:
            return iter(order)
        swap = {order[0]: self.first, self.first: order[0]}
        return iter([swap.get(i, i) for i in order])

    def __len__(self) -> int:
        return len(self.base)


def worst_first(trainer: Any, first: int | None) -> Any:
    """Make a transformers/TRL trainer's training sampler start with row `first` (see FirstSampler)."""
    if first is None:
        return trainer
    base = trainer._get_train_sampler

    def sampler(*args: Any, **kwargs: Any) -> Any:
        inner = base(*args, **kwargs)
        return FirstSampler(inner, first) if inner is not None else None

    trainer._get_train_sampler = sampler
    return trainer
