"""Selected-token log-probs from hidden states, in chunks, so full-vocab logits never exist for a whole batch.

A GRPO batch of 8 sequences x 1.5k tokens over Qwen's 152k vocabulary is ~7 GB of fp32 logits; the
log-prob of each token only needs one row of logits at a time. `selected_logprobs` applies the LM head
to `chunk_size` positions at a time (flattened over batch and sequence), turns that chunk into log-probs
(after an optional row-wise `transform` such as temperature / top-k / top-p) and keeps only the log-prob
of each target token: peak extra memory is `chunk_size x vocab` fp32 instead of `N x T x vocab`.

Each position's logits are computed exactly as the model's own head computes them (`F.linear` in the
weight's dtype, then float32), so results equal the unchunked computation up to GEMM rounding
(~1e-7 in float32; `tests/test_logprobs_chunked.py` checks 1e-5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_SIZE = 1024
"""Positions per chunk: 1024 x 152k vocab x 4 bytes = ~0.6 GB of fp32 logits at a time for Qwen2.5-VL."""


def selected_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                      bias: torch.Tensor | None = None,
                      transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Log-prob of each target token: hidden [N, T, H], LM head weight [V, H] (bias [V]), targets [N, T]
    -> [N, T] float32.

    `transform` maps a chunk of float32 logits [C, V] to the logits to softmax ([C, V], row-wise, e.g.
    `rftcli.generation.warp_logits`); None keeps the model's logits.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if hidden.dim() != 3 or targets.shape != hidden.shape[:2]:
        raise ValueError(f"hidden [N, T, H] and targets [N, T] expected, got {tuple(hidden.shape)} and "
                         f"{tuple(targets.shape)}")
    n, t, h = hidden.shape
    flat_hidden = hidden.reshape(n * t, h)                               # [N*T, H]
    flat_targets = targets.reshape(n * t).to(hidden.device)              # [N*T]
    out = torch.empty(n * t, dtype=torch.float32, device=hidden.device)  # [N*T]
    for start in range(0, n * t, chunk_size):
        stop = min(start + chunk_size, n * t)
        logits = F.linear(flat_hidden[start:stop], weight, bias).float()  # [C, V]
        if transform is not None:
            logits = transform(logits)                                    # [C, V]
        logp = torch.log_softmax(logits, dim=-1)                          # [C, V]
        out[start:stop] = logp.gather(1, flat_targets[start:stop, None]).squeeze(1)
    return out.reshape(n, t)


def plain_lm_head(model: Any) -> torch.nn.Linear | None:
    """The model's output layer if it is a plain `nn.Linear` (not quantized, no adapter on it), else None:
    only then can `selected_logprobs` stand in for it with its weight and bias."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head if type(head) is torch.nn.Linear else None
