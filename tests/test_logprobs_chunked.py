"""Chunked selected-token log-probs (`rftcli.logprobs`) equal the unchunked full-logits computation, on the
tiny model's real hidden states, and never hold more than one chunk of logits at a time."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
import torch

from rftcli.generation import (
    SamplingSettings,
    encode_prompts,
    extend_inputs,
    sampling_logprobs,
    teacher_forced_logprobs,
    warp_logits,
)
from rftcli.logprobs import plain_lm_head, selected_logprobs
from rftcli.schema import read_table


@pytest.fixture(scope="module")
def rows(dataset):
    table = read_table(dataset, "dataset").table
    return table.filter(pc.equal(table["split"], "train")).slice(0, 3).to_pylist()


@pytest.fixture(scope="module")
def forward(loaded, rows):
    """Hidden states, full logits and targets over 3 prompts + 9 random completion tokens each: every other
    target is the most likely token, the rest random (removed by top-k / top-p: -inf)."""
    gen = torch.Generator().manual_seed(0)
    enc = encode_prompts(loaded.processor, rows, "cpu")
    vocab = loaded.model.get_output_embeddings().weight.shape[0]
    completion = torch.randint(0, vocab, (len(rows), 9), generator=gen)
    full = extend_inputs(enc, completion)
    with torch.no_grad():
        out = loaded.model(**full, output_hidden_states=True)
    p = enc["input_ids"].shape[1]
    logits = out.logits[:, p - 1:-1]                       # [N, T, V]
    targets = completion.clone()                           # [N, T]
    targets[:, ::2] = logits.argmax(-1)[:, ::2]            # kept by any top-k / top-p: finite log-probs
    return out.hidden_states[-1][:, p - 1:-1], logits, targets


def _unchunked(logits: torch.Tensor, targets: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    n, t, v = logits.shape
    logp = sampling_logprobs(logits.reshape(n * t, v), settings).reshape(n, t, v)  # [N, T, V]
    return logp.gather(2, targets[:, :, None]).squeeze(2)


@pytest.mark.parametrize("settings", [SamplingSettings(do_sample=False),
                                      SamplingSettings(temperature=0.7, top_k=40, top_p=0.9)],
                         ids=["model", "warped"])
@pytest.mark.parametrize("chunk_size", [1, 5, 27, 4096])
def test_chunked_equals_unchunked(loaded, forward, settings, chunk_size):
    hidden, logits, targets = forward
    head = plain_lm_head(loaded.model)
    assert head is not None
    expected = _unchunked(logits, targets, settings)
    got = selected_logprobs(hidden, head.weight, targets, bias=head.bias,
                            transform=lambda x: warp_logits(x, settings), chunk_size=chunk_size)
    assert got.shape == targets.shape and got.dtype == torch.float32
    assert torch.isfinite(expected).any()
    finite = torch.isfinite(expected)
    assert torch.equal(finite, torch.isfinite(got))  # top-k/top-p removed the same tokens
    assert (got[finite] - expected[finite]).abs().max().item() < 1e-5


def test_peak_logits_are_one_chunk(loaded, forward):
    hidden, _, targets = forward
    head = plain_lm_head(loaded.model)
    seen: list[tuple[int, ...]] = []

    def record(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return x

    selected_logprobs(hidden, head.weight, targets, transform=record, chunk_size=4)
    n, t = targets.shape
    assert [s[0] for s in seen] == [4] * (n * t // 4) + ([n * t % 4] if n * t % 4 else [])
    assert all(s[1] == head.weight.shape[0] for s in seen)


def test_teacher_forced_logprobs_match_full_logits(loaded, rows):
    """The rollout check mode (chunked path) equals the full-logits computation it replaced."""
    settings = SamplingSettings(temperature=0.7, top_k=40, top_p=0.9)
    completions = [[5, 17, 40, 99], [7, 8], [300, 2, 2, 2, 9, 11]]
    got = teacher_forced_logprobs(loaded.model, loaded.processor, rows[0], completions, settings)

    k, longest = len(completions), max(map(len, completions))
    ids = torch.zeros((k, longest), dtype=torch.long)
    valid = torch.zeros((k, longest), dtype=torch.long)
    for i, c in enumerate(completions):
        ids[i, :len(c)] = torch.tensor(c)
        valid[i, :len(c)] = 1
    enc = encode_prompts(loaded.processor, [rows[0]] * k, "cpu")
    p = enc["input_ids"].shape[1]
    full = extend_inputs(enc, ids)
    full["attention_mask"][:, p:] = valid
    with torch.no_grad():
        expected = _unchunked(loaded.model(**full).logits[:, p - 1:-1], ids, settings)
    for i, c in enumerate(completions):
        assert len(got[i]) == len(c)
        for a, b in zip(got[i], expected[i, :len(c)].tolist(), strict=True):
            assert a == b or abs(a - b) < 1e-5


def test_bad_arguments_are_refused(forward, loaded):
    hidden, _, targets = forward
    weight = loaded.model.get_output_embeddings().weight
    with pytest.raises(ValueError, match="chunk_size"):
        selected_logprobs(hidden, weight, targets, chunk_size=0)
    with pytest.raises(ValueError, match="expected"):
        selected_logprobs(hidden, weight, targets[:, :-1])
