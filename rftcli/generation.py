"""Batched generation with transformers `generate`, shared by `rollout` and `eval`.

For each prompt it returns n completions with their token ids and the per-token log-probs of the
distribution the tokens were actually sampled from: the model's logits after temperature, top-k and
top-p (applied in that order, as transformers and vLLM do), softmaxed. Greedy decoding reports the
log-probs of the unwarped distribution. `teacher_forced_logprobs` recomputes them with one forward pass
over prompt + completion, which is how `rollout --check-logprobs` verifies what it stored.

Seeded sampling: transformers draws samples from the global torch RNG, so a sequence's tokens depend on
every other sequence in its batch. Here `generate` keeps its batching, left padding and KV cache, but a
logits processor picks each token itself, by inverse-CDF sampling with one uniform number per sequence and
step taken from a counter-based generator: output number `step + 1` of SplitMix64 seeded with the
sequence's own seed (`row_seed(seed, prompt_id, sample_index)`, a 63-bit integer). The processor hands
`generate` a distribution with all its mass on that token, so `generate` can only confirm it. A
sequence's samples therefore depend only on its seed and its own logits, never on which prompts share its
batch or in which order they run; only floating-point differences between batch shapes (padding, GEMM
kernels picked per shape) can move a draw that lands within ~1e-7 of a token boundary, and they move the
stored log-probs by about that much.
Cost per decoding step: a softmax, a float64 cumsum and a searchsorted over [sequences, vocab], and a few
operations on [sequences] integers - about what `generate`'s own softmax + multinomial cost, which on a
CPU are skipped (`repeat_prompts`). No per-step scores are kept, unlike `output_scores=True`.

Departure: the processor's image/video placeholder tokens (`placeholder_ids`) are never drawn - a
completion holding one cannot be scored with the prompt's images, a crash known from R1-V-style GRPO on
Qwen2-VL. The stored log-prob of a drawn token is still its log-prob under the whole (warped)
distribution, i.e. what a forward pass gives; it is below the log-prob under the distribution actually
drawn from (placeholders removed) by -log(1 - p(placeholders)): ~0 for a trained model, which never emits
them, ~0.002 for the random built-in tiny model.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rftcli.chat import decode_images, prompt_messages
from rftcli.logprobs import plain_lm_head, selected_logprobs


@dataclass(frozen=True)
class Sample:
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (eos or stop string) or "length"


@dataclass(frozen=True)
class SamplingSettings:
    n: int = 1
    """Completions per prompt."""
    do_sample: bool = True
    """Sample (True) or decode greedily (False)."""
    temperature: float = 1.0
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1 = off)."""
    top_k: int = 0
    """Top-k sampling (0 = off)."""
    max_new_tokens: int = 64
    """Most tokens generated per completion."""
    stop: tuple[str, ...] = ()
    """Stop strings: a completion ends with the token that completes one of them (kept in the text)."""
    ignore_eos: bool = False
    """Keep generating past eos to max_new_tokens (fixed-length benchmarks)."""


# ---------------------------------------------------------------- seeds

_MASK64 = (1 << 64) - 1


def row_seed(seed: int, prompt_id: str, sample_index: int) -> int:
    """The seed of one completion: 63 bits of sha256("<seed>/<prompt id>/<sample index>").

    It depends on nothing else, so a prompt's samples do not change with its batch, its position in the
    dataset, --limit, or a resumed run."""
    digest = hashlib.sha256(f"{seed}/{prompt_id}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def uniforms(seeds: np.ndarray, step: int) -> np.ndarray:
    """One uniform number in [0, 1) per seed for decoding step `step`: the top 53 bits of output number
    `step + 1` of SplitMix64 seeded with each seed. uint64 arithmetic wraps, as SplitMix64 requires."""
    z = np.asarray(seeds, dtype=np.uint64) + np.uint64(((step + 1) * 0x9E3779B97F4A7C15) & _MASK64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


# ---------------------------------------------------------------- the sampling distribution

def warp_logits(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """The logits tokens are drawn from: [N, V] -> [N, V] float32, temperature then top-k then top-p
    (-inf where top-k / top-p removed a token). Greedy settings: the model's own logits."""
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    scores = logits.float()  # [N, V]
    if settings.do_sample:
        if settings.temperature != 1.0:
            scores = scores / settings.temperature
        if settings.top_k > 0:
            scores = TopKLogitsWarper(top_k=settings.top_k)(None, scores)
        if settings.top_p < 1.0:
            scores = TopPLogitsWarper(top_p=settings.top_p)(None, scores)
    return scores


def sampling_logprobs(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """Log-probs of the distribution tokens are drawn from: [N, V] logits -> [N, V] float32 log-probs."""
    return torch.log_softmax(warp_logits(logits, settings), dim=-1)  # [N, V]


def sample_tokens(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: the first token whose cumulative weight exceeds u * total weight.

    weights [N, V] >= 0 (probabilities up to a factor per row), u [N] float64 in [0, 1) -> token ids [N].
    A token of weight 0 is never picked: its cumulative sum equals its predecessor's."""
    cdf = weights.cumsum(dim=-1, dtype=torch.float64)  # [N, V]
    total = cdf[:, -1:]  # [N, 1]
    x = torch.minimum(u[:, None] * total, torch.nextafter(total, torch.zeros_like(total)))  # [N, 1], < total
    return torch.searchsorted(cdf, x, right=True).squeeze(1).clamp_(max=weights.shape[1] - 1)  # [N]


# ---------------------------------------------------------------- prompts

def encode_prompts(processor: Any, rows: Sequence[Mapping[str, Any]], device: str | torch.device):
    """Chat-template and tokenize a batch of dataset rows (left padded), images through the processor."""
    texts = [processor.apply_chat_template(prompt_messages(r), add_generation_prompt=True, tokenize=False)
             for r in rows]
    images = [decode_images(r) for r in rows]
    # The chat template writes every special token (Gemma's puts <bos> first); the tokenizer adds none again.
    kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True, "add_special_tokens": False}
    if any(images):
        kwargs["images"] = images  # one list per prompt: Gemma 3 and Idefics3 take a flat list as one prompt's
    return processor(**kwargs).to(device)


_PER_TOKEN = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")
_PER_PROMPT_PIXELS = ("pixel_values", "pixel_attention_mask")  # with a pixel_attention_mask: one row per prompt


def repeat_encoded(inputs: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], n: int) -> dict[str, Any] | None:
    """What `encode_prompts` gives for each of `rows` repeated n times in a row, built from its output for
    `rows` without a second pass through the image processor. Knows per-token tensors ([B, L]), per-row ones
    (LLaVA-OneVision's `batch_num_images`, [B]), per-image ones (`image_grid_thw`, `image_sizes`, or `pixel_values`
    of [images, ...]), Idefics3's per-prompt `pixel_values` and `pixel_attention_mask` ([B, images, ...]) and
    Qwen-VL's per-patch `pixel_values` (rows of each image's t*h*w patches, in image order); None for any other layout (encode again), such as InternVL's tiles of `pixel_values`."""
    images = [len(r.get("images") or []) for r in rows]
    length = inputs["input_ids"].shape[1]
    grid = inputs.get("image_grid_thw")
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if not isinstance(value, torch.Tensor):
            return None
        if key in _PER_TOKEN and value.dim() == 2 and value.shape == (len(rows), length):
            out[key] = value.repeat_interleave(n, dim=0)
            continue
        if "pixel_attention_mask" in inputs and key in _PER_PROMPT_PIXELS and value.shape[0] == len(rows):
            out[key] = value.repeat_interleave(n, dim=0)  # Idefics3 / SmolVLM: [B, images, ...], padded per prompt
            continue
        if key == "batch_num_images" and value.shape == (len(rows),):
            out[key] = value.repeat_interleave(n, dim=0)
            continue
        if key in ("image_grid_thw", "image_sizes"):
            sizes = images
        elif key == "pixel_values" and grid is not None and value.shape[0] == int(grid.prod(-1).sum()):
            per_image = grid.prod(-1).tolist()
            starts = np.cumsum([0] + images)
            sizes = [int(sum(per_image[starts[b]:starts[b + 1]])) for b in range(len(rows))]
        elif key == "pixel_values" and grid is None and value.shape[0] == sum(images):
            sizes = images
        else:
            return None
        if value.shape[0] != sum(sizes):
            return None
        blocks = torch.split(value, sizes, dim=0)  # one block per row
        out[key] = torch.cat([blk for blk in blocks for _ in range(n)], dim=0)
    return out


def prompt_length(processor: Any, row: Mapping[str, Any]) -> int:
    """Tokens of a row's prompt, without decoding pixels: the chat-templated text plus, per image, the
    number of tokens the processor expands its placeholder to (from the image's size in its header).
    Processors that cannot say count the text alone; the value only orders prompts to cut padding."""
    from PIL import Image

    text = processor.apply_chat_template(prompt_messages(row), add_generation_prompt=True, tokenize=False)
    n = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
    images = row.get("images") or []
    counter = getattr(processor, "_get_num_multimodal_tokens", None)
    if images and counter is not None:
        sizes = []
        for item in images:
            with Image.open(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]) as img:
                sizes.append((img.height, img.width))
        try:
            n += sum(counter(image_sizes=sizes).num_image_tokens) - len(images)
        except (AttributeError, TypeError, ValueError):  # a processor that cannot say: text alone
            pass
    return n


def eos_id_list(config_eos: int | list[int] | None, tokenizer_eos: int | None) -> list[int]:
    """Token ids that end a completion: a generation config's eos id(s) and the tokenizer's."""
    ids = config_eos if isinstance(config_eos, list) else [config_eos] if config_eos is not None else []
    return sorted(set(ids + ([tokenizer_eos] if tokenizer_eos is not None else [])))


def eos_ids(model: Any, processor: Any) -> list[int]:
    return eos_id_list(model.generation_config.eos_token_id, processor.tokenizer.eos_token_id)


def placeholder_ids(processor: Any) -> list[int]:
    """The processor's image/video placeholder tokens (Qwen: <|image_pad|>, <|video_pad|>; Gemma 3: its
    processor's `image_token` is <start_of_image>, the slot the model fills is the tokenizer's <image_soft_token>).
    A completion containing one cannot be scored by a forward pass over prompt + completion with the prompt's
    images (the model counts it as an image slot), so they are never sampled."""
    tokenizer = processor.tokenizer
    ids = {i for i in getattr(processor, "image_token_ids", None) or () if isinstance(i, int)}
    ids |= {i for i in (getattr(tokenizer, "image_token_id", None),) if isinstance(i, int)}
    for kind in ("image", "video"):
        token_id = getattr(processor, f"{kind}_token_id", None)
        token = getattr(processor, f"{kind}_token", None)
        if token_id is None and isinstance(token, str):
            token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(ids)


# ---------------------------------------------------------------- generate

class _SeededSampler:
    """Logits processor + stopping criterion for one `generate` call over R sequences.

    As processor, it draws each sequence's next token from its own seeded stream and records the token and
    its log-prob; as stopping criterion, it marks a sequence done at eos or a stop string."""

    def __init__(self, settings: SamplingSettings, seeds: Sequence[int], eos: Sequence[int], tokenizer: Any,
                 banned: Sequence[int] = ()):
        self.settings = settings
        self.banned = list(banned)
        self._banned_t: torch.Tensor | None = None
        self.seeds = np.array(seeds, dtype=np.uint64)  # [R]
        self.eos = list(eos)
        self.tokenizer = tokenizer
        self.tokens: list[torch.Tensor] = []  # per step: [R] token ids
        self.logps: list[torch.Tensor] = []   # per step: [R] float32
        self.ended_at: torch.Tensor | None = None  # [R] tokens kept per sequence; 0 = still running
        # A stop string of c characters spans at most 4c byte-level tokens (+1 for a split character).
        self.window = 4 * max((len(s) for s in settings.stop), default=0) + 2

    def process(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(warp_logits(scores, self.settings), dim=-1)  # [R, V]
        if self.banned:  # never drawn; a drawn token's probability is still that of the whole distribution
            if self._banned_t is None:
                self._banned_t = torch.tensor(self.banned, device=scores.device)
            kept = probs.index_select(1, self._banned_t)  # [R, banned]
            probs.index_fill_(1, self._banned_t, 0.0)
            empty = probs.sum(dim=-1) == 0  # [R]: top-k/top-p left nothing else, so the guard yields
            if bool(empty.any()):
                probs[empty] = probs[empty].index_copy(1, self._banned_t, kept[empty])
        if self.settings.do_sample:
            u = torch.from_numpy(uniforms(self.seeds, len(self.tokens))).to(scores.device)  # [R]
            chosen = sample_tokens(probs, u)  # [R]
        else:
            chosen = probs.argmax(dim=-1)  # [R]
        self.tokens.append(chosen)
        self.logps.append(probs.gather(1, chosen[:, None]).squeeze(1).log())  # [R]
        # All mass on the chosen token: generate's argmax or multinomial can only pick it.
        return scores.fill_(float("-inf")).scatter_(1, chosen[:, None], 0.0)  # [R, V]

    def done(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        step = len(self.tokens)  # tokens generated so far
        last = self.tokens[-1]  # [R]
        if self.ended_at is None:
            self.ended_at = torch.zeros_like(last)
        if self.settings.ignore_eos and not self.settings.stop:
            return self.ended_at > 0  # [R], all False
        running = self.ended_at == 0  # [R]
        hit = torch.zeros_like(running)
        if self.eos and not self.settings.ignore_eos:
            hit |= torch.isin(last, torch.tensor(self.eos, device=last.device))
        if self.settings.stop:  # decode the last tokens of each running sequence
            tail = torch.stack(self.tokens[-self.window:], dim=1).tolist()  # [R, <=window]
            rows = [r for r, check in enumerate((running & ~hit).tolist()) if check]
            texts = self.tokenizer.batch_decode([tail[r] for r in rows], skip_special_tokens=False)
            found = [r for r, text in zip(rows, texts, strict=True) if any(s in text for s in self.settings.stop)]
            if found:
                hit[torch.tensor(found, device=last.device)] = True
        self.ended_at = torch.where(running & hit, torch.full_like(last, step), self.ended_at)
        return self.ended_at > 0  # [R]

    def samples(self) -> list[Sample]:
        steps = min(len(self.tokens), self.settings.max_new_tokens)
        tokens = torch.stack(self.tokens[:steps], dim=1).tolist()  # [R, T]
        logps = torch.stack(self.logps[:steps], dim=1).tolist()    # [R, T]
        ended = self.ended_at.tolist() if self.ended_at is not None else [0] * len(tokens)
        out = []
        for ids, lps, end in zip(tokens, logps, ended, strict=True):
            reason = "stop" if 0 < end <= steps else "length"
            end = end if reason == "stop" else steps
            out.append(Sample(text=self.tokenizer.decode(ids[:end], skip_special_tokens=True), token_ids=ids[:end],
                              logprobs=lps[:end], finish_reason=reason))
        return out


def repeat_prompts(device: str | torch.device, n: int) -> bool:
    """Whether the n sequences of a prompt are encoded as n rows (True) or expanded by `generate`.

    On a CPU, repeated rows let `generate` decode greedily over the sampler's one-hot, skipping its own
    softmax + multinomial (~3 ms per step for 64 sequences x 1k tokens there, more than the tiny model's
    forward). On a GPU that step is cheap, and `generate`'s expansion runs the vision tower once per prompt
    instead of n times. Both give the same samples: the sampler draws them either way."""
    return n > 1 and torch.device(device).type == "cpu"


def encode_repeated(processor: Any, rows: Sequence[Mapping[str, Any]], n: int, device: str | torch.device):
    """Each row encoded n times in a row (prompt-major), images through the processor once per row."""
    inputs = encode_prompts(processor, rows, device)
    repeated = repeat_encoded(inputs, rows, n)
    if repeated is None:
        return encode_prompts(processor, [r for r in rows for _ in range(n)], device)
    return repeated


def generate_encoded(model: Any, processor: Any, inputs: Mapping[str, Any], settings: SamplingSettings,
                     seeds: Sequence[int] | None = None, *, repeated: bool = False) -> list[Sample]:
    """Completions for already-encoded prompts, prompt-major: B prompts -> B * n samples (the n samples of
    prompt b at b*n .. b*n+n-1), or with `repeated` the inputs already hold each prompt n times in a row
    (B * n rows, see `repeat_prompts`). `seeds` has one seed per sample (ignored when greedy)."""
    from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    per_prompt = 1 if repeated else settings.n
    rows = inputs["input_ids"].shape[0] * per_prompt
    if settings.do_sample and (seeds is None or len(seeds) != rows):
        raise ValueError(f"sampling {rows} sequences needs {rows} seeds")
    eos = eos_ids(model, processor)
    sampler = _SeededSampler(settings, seeds if settings.do_sample else [0] * rows, eos, processor.tokenizer,
                             banned=placeholder_ids(processor))

    class Process(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return sampler.process(input_ids, scores)

    class Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return sampler.done(input_ids, scores, **kwargs)

    # The sampler picks every token. With one sequence per prompt generate decodes greedily over its
    # one-hot output; with n > 1 it insists on sampling (expanding the prompts itself), and its own softmax
    # + multinomial run on the one-hot, so they can only confirm the pick. A clean configuration:
    # penalties in the checkpoint's generation config would change the distribution before the sampler
    # sees it; warpers run after it and are neutral anyway.
    mode: dict[str, Any] = dict(do_sample=False)
    if per_prompt > 1:
        mode = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0, epsilon_cutoff=0.0,
                    eta_cutoff=0.0)
    model.generate(**inputs, **mode, num_return_sequences=per_prompt, max_new_tokens=settings.max_new_tokens,
                   repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
                   eos_token_id=[] if settings.ignore_eos else eos, pad_token_id=processor.tokenizer.pad_token_id,
                   use_cache=True, logits_processor=LogitsProcessorList([Process()]),
                   stopping_criteria=StoppingCriteriaList([Stop()]))
    return sampler.samples()


@torch.no_grad()
def generate(model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], settings: SamplingSettings,
             seed: int | None = None, *, row_seeds: Sequence[Sequence[int]] | None = None) -> list[list[Sample]]:
    """n samples for each row, in row order.

    Sampling seeds: `row_seeds[b][j]` if given, else `row_seed(seed, row id, j)` (the row's position in
    `rows` when it has no id); without a seed, one is drawn from torch's global generator."""
    device = next(model.parameters()).device
    repeat = repeat_prompts(device, settings.n)
    inputs = encode_repeated(processor, rows, settings.n, device) if repeat else encode_prompts(processor, rows, device)
    seeds: list[int] | None = None
    if settings.do_sample:
        if row_seeds is None:
            if seed is None:
                seed = int(torch.randint(0, 2**62, (1,)).item())
            row_seeds = [[row_seed(seed, str(r.get("id", b)), j) for j in range(settings.n)]
                         for b, r in enumerate(rows)]
        seeds = [s for group in row_seeds for s in group]
    flat = generate_encoded(model, processor, inputs, settings, seeds, repeated=repeat)
    return [flat[b * settings.n:(b + 1) * settings.n] for b in range(len(rows))]


# ---------------------------------------------------------------- teacher forcing

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


@torch.no_grad()
def teacher_forced_logprobs(model: Any, processor: Any, row: Mapping[str, Any], completions: Sequence[Sequence[int]],
                            settings: SamplingSettings) -> list[list[float]]:
    """Log-probs of each completion's tokens under the sampling distribution, from one forward pass over
    prompt + completions (right padded, padding masked out). With a plain LM head the log-probs come from
    the decoder's hidden states in chunks (`rftcli.logprobs.selected_logprobs`), not from whole logits."""
    device = next(model.parameters()).device
    k = len(completions)
    longest = max(len(c) for c in completions)
    pad = processor.tokenizer.pad_token_id or 0
    ids = torch.full((k, longest), pad, dtype=torch.long)  # [k, T]
    valid = torch.zeros((k, longest), dtype=torch.long)    # [k, T]
    for i, c in enumerate(completions):
        ids[i, :len(c)] = torch.tensor(c, dtype=torch.long)
        valid[i, :len(c)] = 1
    enc = encode_prompts(processor, [row] * k, device)
    prompt_len = enc["input_ids"].shape[1]
    full = extend_inputs(enc, ids.to(device))
    full["attention_mask"][:, prompt_len:] = valid.to(device)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = plain_lm_head(inner)
    if head is not None and isinstance(getattr(inner, "model", None), torch.nn.Module):
        # The decoder's last hidden states, then the LM head in chunks: no [k, P+T, V] logits.
        hidden = inner.model(**full)[0][:, prompt_len - 1:-1]  # [k, T, H]
        picked = selected_logprobs(hidden, head.weight, ids.to(device), bias=head.bias,
                                   transform=lambda x: warp_logits(x, settings)).cpu()  # [k, T]
    else:
        logits = model(**full).logits[:, prompt_len - 1:-1]  # [k, T, V]
        logp = sampling_logprobs(logits.reshape(k * longest, -1), settings).reshape(k, longest, -1)  # [k, T, V]
        picked = logp.gather(2, ids.to(device)[:, :, None]).squeeze(2).cpu()  # [k, T]
    return [picked[i, :len(c)].tolist() for i, c in enumerate(completions)]
