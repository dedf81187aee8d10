"""Batched generation with transformers `generate`, shared by `rollout` and `eval`.

For each prompt it returns n completions with their token ids and the per-token log-probs of the
distribution the tokens were actually sampled from: the scores `generate` hands out after its logits
processors (temperature, top-k, top-p), log-softmaxed. Greedy decoding reports the log-probs of the
unwarped distribution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rftcli.chat import decode_images, prompt_messages


@dataclass(frozen=True)
class Sample:
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" or "length"


@dataclass(frozen=True)
class SamplingSettings:
    n: int = 1
    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64


def encode_prompts(processor: Any, rows: Sequence[Mapping[str, Any]], device: str | torch.device):
    """Chat-template and tokenize a batch of dataset rows (left padded), images through the processor."""
    texts = [processor.apply_chat_template(prompt_messages(r), add_generation_prompt=True, tokenize=False)
             for r in rows]
    images = [decode_images(r) for r in rows]
    kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
    if any(images):
        kwargs["images"] = [img for imgs in images for img in imgs]
    return processor(**kwargs).to(device)


def _eos_ids(model: Any, processor: Any) -> list[int]:
    eos = model.generation_config.eos_token_id
    ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    tok_eos = processor.tokenizer.eos_token_id
    return sorted(set(ids + ([tok_eos] if tok_eos is not None else [])))


@torch.no_grad()
def generate(model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], settings: SamplingSettings,
             seed: int | None = None) -> list[list[Sample]]:
    """n samples for each row, in row order."""
    device = next(model.parameters()).device
    inputs = encode_prompts(processor, rows, device)
    eos_ids = _eos_ids(model, processor)
    pad_id = processor.tokenizer.pad_token_id
    if seed is not None:
        torch.manual_seed(seed)
    gen_kwargs: dict[str, Any] = dict(max_new_tokens=settings.max_new_tokens, num_return_sequences=settings.n,
                                      output_scores=True, return_dict_in_generate=True,
                                      eos_token_id=eos_ids, pad_token_id=pad_id, do_sample=settings.do_sample)
    if settings.do_sample:
        gen_kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    out = model.generate(**inputs, **gen_kwargs)
    prompt_len = inputs["input_ids"].shape[1]
    tokens = out.sequences[:, prompt_len:]  # [B*n, T]
    # Log-prob of each chosen token under the processed scores, one step at a time so that only
    # [B*n, V] is materialised in float32 at once.
    logps = torch.stack([torch.log_softmax(s.float(), dim=-1).gather(1, tokens[:, i:i + 1]).squeeze(1)
                         for i, s in enumerate(out.scores)], dim=1)  # [B*n, T]
    eos = torch.tensor(eos_ids, device=tokens.device)
    results: list[list[Sample]] = []
    for b in range(len(rows)):
        group = []
        for j in range(settings.n):
            k = b * settings.n + j
            ids = tokens[k].tolist()
            is_eos = torch.isin(tokens[k], eos).nonzero()
            if len(is_eos):
                end, reason = int(is_eos[0]) + 1, "stop"
            else:
                end, reason = len(ids), "length"
            ids = ids[:end]
            text = processor.tokenizer.decode(ids, skip_special_tokens=True)
            group.append(Sample(text=text, token_ids=ids, logprobs=logps[k, :end].tolist(), finish_reason=reason))
        results.append(group)
    return results


def extend_inputs(inputs: Mapping[str, Any], completion_ids: torch.Tensor) -> dict[str, Any]:
    """Prompt inputs + completion tokens, ready for one teacher-forced forward pass.

    Per-token tensors of the prompt ([B, L]) are extended by the completion ([B, T]): input ids by the
    tokens, the attention mask by ones, token-type ids (e.g. `mm_token_type_ids`) by zeros (text).
    """
    prompt_len = inputs["input_ids"].shape[1]
    out = dict(inputs)
    for key, value in inputs.items():
        if not (isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[1] == prompt_len):
            continue
        if key == "input_ids":
            tail = completion_ids.to(value)
        elif key == "attention_mask":
            tail = torch.ones_like(completion_ids, dtype=value.dtype)
        else:
            tail = torch.zeros_like(completion_ids, dtype=value.dtype)
        out[key] = torch.cat([value, tail.to(value.device)], dim=1)
    return out
