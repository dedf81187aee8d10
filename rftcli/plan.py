"""Predicted peak accelerator memory of a run, by part, from a model's config.json and the run's settings: no
weights are read, nothing is allocated.

Reads: the model's `config.json` (a local folder, a config file, a hub snapshot already in the local cache, or a
built-in model; an adapter: its base's), the stage's settings, and optionally the dataset table, of which only
the worst-case sample matters: the most image tokens after the processor's resize rule (Qwen2-VL's
`smart_resize`: sides rounded to patch x merge, shrunk under max_pixels, enlarged over min_pixels) and the
longest prompt. Without a table the worst case is the budgets themselves: a prompt of `max_prompt_length`
tokens holding one image at `max_pixels`.

The model of memory (bytes; "16-bit" is bf16 or fp16):
- weights: every parameter in 16 bits; with 4-bit, the language model's linear layers in NF4 with double
  quantisation (0.5 byte per weight, one 8-bit absmax per 64 weights, one fp32 constant per 256 absmax) and the
  rest kept in 16 bits (embeddings, lm_head, norms, biases, the vision tower and merger), as rftcli loads it.
- LoRA parameters r x (in + out) per adapted linear layer; their gradients, and AdamW's two fp32-sized states.
  PEFT keeps adapter weights in fp32 on a 16-bit base; with 4-bit on CUDA TRL casts them to bf16.
- activations saved for backward, per decoder layer and token, as autograd keeps them with PEFT's LoRA (counted
  with saved-tensor hooks on small models of these architectures; see `saved_per_token_layer`): SDPA's q, k, v and
  output and the MLP's gate, up and act(gate) in 16 bits, both RMSNorm inputs in fp32 (and Qwen3's q/k norm
  inputs), the LoRA rank-r intermediates, and the inputs of the adapted layers - shared in 16 bits when the
  adapters are 16-bit (QLoRA and full fine-tuning), one fp32 copy per adapted layer when they are fp32 (PEFT's
  default on a 16-bit base). A frozen base layer saves nothing. With gradient checkpointing only each layer's
  input is kept plus one layer's activations while it is recomputed. Attention is SDPA/flash: no tokens x
  tokens matrix.
- logits: train-grpo (online through TRL's GRPOTrainer, offline through rftcli's trainer) computes log-probs with
  TRL's fused LM head, which never holds whole logits: tiles of at most 4,096 tokens x 32,768 vocabulary columns.
  On CUDA its Triton kernels fold a tile in registers and accumulate in fp32 without copies, leaving the 16-bit
  tile and the fp32 hidden-state gradient; elsewhere its torch fallback holds `TILE_FP32` fp32 temporaries of a
  tile in backward, or the tile and the head's vocabulary slice upcast to fp32 for the accumulation, whichever
  is larger (on CUDA it scores the completion tokens only, elsewhere every position). rftcli's own log-probs
  (rollout, rftcli/logprobs.py) also work in chunks. sft-coldstart (TRL's SFTTrainer) computes the whole
  micro-batch's logits, batch x sequence x vocab, `LOGIT_COPIES` copies.
- generation: the KV cache of the whole generation batch (batch x grad_accum completions) at prompt +
  completion length, and the prefill's transient one-layer working set.
- the vision tower on the worst-case batch's images: no gradients unless LoRA reaches it, so one block's
  working set (`VIS_H` x vision hidden + `VIS_I` x vision MLP per patch) and the merged image embeddings; with
  LoRA on the tower, what autograd keeps per patch and block (`saved_per_patch_block`; the merger aside).
Peak = weights + LoRA parameters + optimizer states + the larger of the training phase (activations, logits,
gradients, vision) and the generation phase (KV cache, prefill, vision). On CUDA a fixed context and an
allocator margin are added (`CUDA_CONTEXT`, `ALLOCATOR_MARGIN`); the constants are calibrated on CPU by
bench/plan_calibration.py (bench/RESULTS.md) and not yet on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rftcli.model_shape import Shape, read_model_config, shape, smart_resize

GIB = 1024 ** 3
LOGIT_COPIES = 5  # SFT: 16-bit logits, their fp32 upcast, the log-softmax kept for backward, its gradient
TILE_TOKENS, TILE_VOCAB = 4096, 32768  # TRL's fused LM head: token x vocabulary tiles (trl.kernels.chunked_logprob)
TILE_FP32 = 7.25  # fp32 temporaries of a tile in the torch fallback's backward (y, z, log p, p, the gradient and
# two terms of it, and the 1-byte target mask), counted from trl.kernels.chunked_logprob
VIS_H = 8  # the vision tower's working set per patch, in vision-width units (one block, no gradients)
VIS_I = 3
LORA_INPUTS = {"q_proj": "h", "k_proj": "h", "v_proj": "h", "o_proj": "q", "gate_proj": "h", "up_proj": "h",
               "down_proj": "i"}  # the input width of each adaptable language linear layer
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weight, 8-bit absmax per 64, fp32 per 256 absmax
CUDA_CONTEXT = 0.5 * GIB  # CUDA context and kernels, outside the allocator
ALLOCATOR_MARGIN = 0.08  # fragmentation and cached blocks of PyTorch's CUDA allocator
VLLM_COLOCATE_SHARE = 0.3  # TRL's vllm_gpu_memory_utilization default: the card's share vLLM takes in colocate mode
DEFAULT_MIN_PIXELS = 56 * 56


@dataclass(frozen=True)
class Settings:
    """The run settings memory depends on (the stage configs' fields of the same names)."""

    stage: str = "train-grpo"
    """train-grpo (online), train-grpo-offline, sft-coldstart or rollout."""
    batch_size: int = 8
    """Completions (sequences) per device per micro-step."""
    grad_accum: int = 1
    """Gradient accumulation steps (online GRPO generates batch_size x grad_accum completions at once)."""
    num_generations: int = 4
    """Completions per prompt (G)."""
    max_completion_length: int = 64
    """Most tokens per completion (sft-coldstart: the target's length)."""
    max_prompt_length: int = 4096
    """Most tokens per prompt, text and images."""
    max_pixels: int = 1280 * 28 * 28
    """Images are shrunk to at most this many pixels."""
    min_pixels: int = DEFAULT_MIN_PIXELS
    """Images are enlarged to at least this many pixels."""
    lora_r: int = 16
    """LoRA rank."""
    lora_vision: bool = False
    """LoRA on the vision tower too."""
    target_modules: str | None = None
    """Adapted linear layer names, comma-separated (None: all of the language model's)."""
    full: bool = False
    """Train every weight instead of LoRA."""
    load_in_4bit: bool = False
    """QLoRA: NF4 base."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward."""
    device: str = "cuda"
    """cuda (adds the context and allocator margin) or cpu (the allocator's bytes only)."""

    def __post_init__(self):
        if self.stage not in ("train-grpo", "train-grpo-offline", "sft-coldstart", "rollout"):
            raise ValueError(f"stage must be train-grpo, train-grpo-offline, sft-coldstart or rollout, got {self.stage!r}")
        for name in ("batch_size", "grad_accum", "num_generations", "max_completion_length", "max_prompt_length",
                     "max_pixels", "min_pixels", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Sample:
    """The worst-case sample: its prompt tokens (text and image) and its images' patches."""

    prompt_tokens: int
    """Prompt tokens, text and image tokens together."""
    image_tokens: int
    """Image tokens after the resize rule (patches / merge^2)."""
    patches: int
    """Vision patches the vision tower runs on."""
    source: str
    """Where it came from: the budgets, or the table's row id."""


@dataclass(frozen=True)
class Plan:
    """Predicted peak memory of one device, by part (bytes)."""

    parts: tuple[tuple[str, float, str], ...]
    """(part, bytes, note), in print order; `peak` is not their sum (see the module docstring)."""
    peak: float
    """Predicted peak bytes."""
    tokens_per_step: int
    """Tokens (prompt + completion) per optimizer step per device."""
    sample: Sample
    settings: Settings
    shape: Shape
    logprobs_chunked: bool
    """Whether the stage computes log-probs in chunks of positions (no full logits)."""
    phases: tuple[tuple[str, float], ...] = ()
    """(phase, bytes) of the phases the stage has: weights, LoRA and optimizer states plus the training phase's
    or the generation phase's parts, without the CUDA overhead; `peak` is the largest plus that overhead."""

    def fits(self, gib: float) -> bool:
        return self.peak <= gib * GIB


def image_patches(height: int, width: int, model: Shape, settings: Settings) -> int:
    """Vision patches of one image after the resize rule (image tokens = patches / merge^2)."""
    h, w = smart_resize(height, width, model.patch * model.merge, settings.min_pixels, settings.max_pixels)
    return (h // model.patch) * (w // model.patch)


TEMPLATE_TOKENS = 24  # chat template around a prompt: role markers, vision start/end, the assistant turn opening


def text_tokens(system: str, prompt: str) -> int:
    """An upper estimate of a prompt's text tokens without the tokenizer: a UTF-8 byte per 3, plus the template
    (Qwen's byte-level BPE averages 3.5-4.5 bytes per token on English)."""
    return math.ceil(len((system + prompt).encode("utf-8")) / 3) + TEMPLATE_TOKENS


def budget_sample(model: Shape, settings: Settings) -> Sample:
    """The worst case the budgets allow: a prompt of max_prompt_length tokens with one square image at max_pixels."""
    side = int(math.sqrt(settings.max_pixels))
    patches = image_patches(side, side, model, settings)
    image = patches // model.merge ** 2
    return Sample(prompt_tokens=max(settings.max_prompt_length, image), image_tokens=image, patches=patches,
                  source="the budgets (--max-prompt-length, --max-pixels)")


def row_patches(row: Mapping[str, Any], model: Shape, settings: Settings) -> int:
    """Vision patches of a row's images after the resize rule; sizes from the image headers, no pixels decoded."""
    import io

    from PIL import Image

    patches = 0
    for item in row.get("images") or []:
        data = (item or {}).get("bytes")
        if data:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
            patches += image_patches(height, width, model, settings)
    return patches


def worst_case(rows: list[Mapping[str, Any]], model: Shape, settings: Settings) -> Sample:
    """The rows' worst case: the most image tokens after the resize rule and the longest prompt (each from its
    own row if they differ)."""
    best_patches, best_prompt, patch_id, prompt_id = 0, 0, None, None
    for row in rows:
        patches = row_patches(row, model, settings)
        tokens = min(settings.max_prompt_length,
                     text_tokens(row.get("system") or "", row.get("prompt") or "") + patches // model.merge ** 2)
        if patches > best_patches or patch_id is None:
            best_patches, patch_id = patches, row.get("id")
        if tokens > best_prompt:
            best_prompt, prompt_id = tokens, row.get("id")
    if not rows:
        return budget_sample(model, settings)
    source = f"row {patch_id!r}" if patch_id == prompt_id else f"rows {patch_id!r} (images) and {prompt_id!r} (prompt)"
    return Sample(prompt_tokens=best_prompt, image_tokens=best_patches // model.merge ** 2, patches=best_patches,
                  source=source)


def saved_per_token_layer(model: Shape, names: set[str] | None, adapter_bytes: int, rank: int, full: bool) -> float:
    """Bytes autograd keeps for backward per token and decoder layer (16-bit base; see the module docstring).

    Counted with saved-tensor hooks on small Qwen2.5-VL and Qwen3-VL models (every LoRA target set and adapter dtype
    tried matched to within 0.1%): a frozen layer saves nothing, so only SDPA, the MLP's activation, the norms
    and the adapters' inputs and intermediates remain."""
    e = 2
    h, i = model.hidden, model.intermediate
    q, kvd = model.heads * model.head_dim, model.kv_heads * model.head_dim
    width = {"h": h, "q": q, "i": i}
    targets = set(LORA_INPUTS) if full or names is None else names & set(LORA_INPUTS)
    saved = e * (q + 2 * kvd + q)  # SDPA: q, k, v after rotary, and its output
    if not full and not targets & {"q_proj", "k_proj"}:
        saved += e * 2 * model.head_dim  # the rotary's cos and sin, kept when q and k come from frozen layers
    saved += e * 3 * i  # gate, up, act(gate)
    saved += 4 * (2 * h + 2)  # both RMSNorm inputs upcast to fp32, and their fp32 scale per token
    if model.model_type == "qwen3_vl":
        saved += 4 * (q + kvd + model.heads + model.kv_heads)  # the per-head q and k norms' inputs and scales
    if adapter_bytes == e:  # the adapted layers' inputs, each saved once (o_proj's is SDPA's output)
        saved += e * (h * bool(targets & {"q_proj", "k_proj", "v_proj"}) + h * bool(targets & {"gate_proj", "up_proj"})
                      + i * ("down_proj" in targets))
    else:  # PEFT casts each adapted layer's input to the fp32 adapter's dtype: one copy each
        saved += adapter_bytes * sum(width[LORA_INPUTS[n]] for n in targets)
    if full:  # trainable norm weights keep their normalised inputs
        saved += e * 2 * h + (e * (q + kvd) if model.model_type == "qwen3_vl" else 0)
    else:
        saved += adapter_bytes * rank * len(targets)  # lora_A's output, kept for lora_B
    return float(saved)


def saved_per_patch_block(model: Shape, adapter_bytes: int, rank: int) -> float:
    """Bytes autograd keeps per patch and vision block with LoRA on every linear layer of the tower (the merger
    aside), counted like `saved_per_token_layer` on small Qwen2.5-VL and Qwen3-VL towers."""
    e = 2
    vh, vi = model.vision_hidden, model.vision_intermediate
    saved = e * 6 * vh + 16  # attention: q, k, v after rotary, the rotary tables, SDPA's output; norm statistics
    if model.model_type == "qwen2_5_vl":  # RMSNorm (fp32 inputs); gate, up, down
        saved += 4 * 2 * vh + e * 3 * vi
        inputs, layers = (4 * vh + vi) if adapter_bytes != e else (3 * vh + vi), 5
    else:  # LayerNorm (16-bit inputs); fc1, GELU, fc2
        saved += e * 2 * vh + e * vi
        inputs, layers = 3 * vh + vi, 4
    return float(saved + adapter_bytes * inputs + adapter_bytes * rank * layers)


def plan(config: Mapping[str, Any], settings: Settings, sample: Sample | None = None,
         where: str = "config.json") -> Plan:
    """The predicted peak memory of a run with `settings` on the model of `config` (see the module docstring)."""
    s, model = settings, shape(config, where)
    sample = sample or budget_sample(model, settings)
    e = 2  # 16-bit element
    h, i, layers, vocab = model.hidden, model.intermediate, model.layers, model.vocab
    kvd = model.kv_heads * model.head_dim
    # Weights.
    if s.load_in_4bit:
        weights = model.quantizable * NF4_BYTES + (model.params - model.quantizable) * e
        weight_note = "NF4 + double quant; embeddings, lm_head, norms, vision tower in 16 bits"
    else:
        weights = model.params * e
        weight_note = "16-bit"
    # LoRA and the optimizer.
    names = {n.strip() for n in s.target_modules.split(",")} if s.target_modules else None
    in_out = (sum(v for n, v in model.lora_in_out_by_name if n in names) if names else model.lora_in_out)
    if s.lora_vision:
        in_out += model.vision_lora_in_out
    trainable = model.params if s.full else s.lora_r * in_out
    # PEFT keeps adapters in fp32 on a 16-bit base; TRL and rftcli cast them to bf16 on a 4-bit one (QLoRA).
    lora_bytes = e if s.full or s.load_in_4bit else 4
    training = s.stage != "rollout"
    lora = 0 if s.full or not training else trainable * lora_bytes
    grads = trainable * lora_bytes if training else 0
    optimizer = 2 * trainable * lora_bytes if training else 0
    # Sequences.
    prompt = sample.prompt_tokens
    completion = s.max_completion_length
    seq = prompt + completion
    micro = s.batch_size
    per_token_layer = saved_per_token_layer(model, names, lora_bytes, s.lora_r, s.full)
    if not training:
        act_full = act_ckpt = 0.0
    else:
        act_full = layers * micro * seq * per_token_layer
        act_ckpt = layers * micro * seq * h * e + micro * seq * per_token_layer
    activations = act_ckpt if s.gradient_checkpointing else act_full
    chunked = s.stage != "sft-coldstart"
    # TRL's fused LM head scores the completion tokens on CUDA, every position elsewhere (no Triton).
    logit_tokens = micro * (completion if s.stage != "sft-coldstart" and s.device == "cuda" else seq)
    if not training:
        logits = 0.0
    elif chunked:
        tile = min(logit_tokens, TILE_TOKENS) * min(vocab, TILE_VOCAB)
        grad_hidden = logit_tokens * h * 4
        if s.device == "cuda":  # Triton folds the tile in registers; addmm accumulates in fp32 without copies
            logits = tile * e + grad_hidden
        else:  # the torch fallback: the backward's temporaries, or the fp32 copies of the tile and the head slice
            logits = max(tile * (e + 4 * TILE_FP32), tile * (e + 4) + min(vocab, TILE_VOCAB) * h * 4) + grad_hidden
    else:
        logits = logit_tokens * vocab * e * LOGIT_COPIES
    # Generation: online GRPO generates batch x grad_accum completions at once; rollout its batch.
    generates = s.stage in ("train-grpo", "rollout")
    gen_batch = micro * s.grad_accum if s.stage == "train-grpo" else micro
    kv_cache = 2 * layers * kvd * seq * gen_batch * e if generates else 0.0
    prefill = gen_batch * prompt * (4 * h + 3 * i) * e if generates else 0.0
    if s.stage == "train-grpo" and not s.full and s.device == "cpu":
        # On the CPU, generate's LM head on the last position (a strided slice) with a frozen head weight runs
        # as torch.matmul's unfolded path, a batched matmul that copies the weight once per sequence (measured by
        # bench/plan_calibration.py); a head weight that requires grad (rollout, full fine-tune) folds to one
        # matmul without the copy. On CUDA the batched matmul is taken to read the broadcast weight in place (not yet
        # measured on a GPU).
        prefill += gen_batch * vocab * h * e
    # Vision: one block's working set on the batch's images, and the merged embeddings.
    vis_patches = sample.patches * max(micro, gen_batch if generates else 0)
    vision = vis_patches * (VIS_H * model.vision_hidden + VIS_I * model.vision_intermediate) * e
    vision += vis_patches // model.merge ** 2 * h * e
    if s.lora_vision and training:
        vision += model.vision_depth * sample.patches * micro * saved_per_patch_block(model, lora_bytes, s.lora_r)
    train_phase = activations + logits + grads + vision if training else 0.0
    gen_phase = kv_cache + prefill + vision if generates else 0.0
    peak = weights + lora + optimizer + max(train_phase, gen_phase)
    overhead = CUDA_CONTEXT + ALLOCATOR_MARGIN * peak if s.device == "cuda" else 0.0
    peak += overhead
    other_ckpt = act_full if s.gradient_checkpointing else act_ckpt
    parts = (
        ("weights", weights, f"{model.params / 1e9:.2f}B parameters, {weight_note}"),
        ("LoRA parameters", lora, f"{trainable / 1e6:.1f}M, rank {s.lora_r}" if not s.full else "full fine-tune"),
        ("gradients", grads, f"{lora_bytes * 8}-bit, trainable parameters only"),
        ("optimizer states", optimizer, "AdamW, two states per trainable parameter"),
        ("activations", activations,
         f"{'with' if s.gradient_checkpointing else 'without'} gradient checkpointing; "
         f"{'without' if s.gradient_checkpointing else 'with'}: {other_ckpt / GIB:.2f} GiB"),
        ("logits and log-probs", logits,
         f"{'fused LM head, tiles of at most 4,096 x 32,768' if chunked else 'whole micro-batch'}: "
         f"{logit_tokens:,} tokens x {vocab:,} vocab"),
        ("KV cache (generation)", kv_cache, f"{gen_batch} sequences x {seq:,} tokens" if generates else "no generation"),
        ("vision tower", vision, f"{sample.image_tokens:,} image tokens ({sample.patches:,} patches) per sample"),
        ("CUDA context and allocator margin", overhead,
         f"{CUDA_CONTEXT / GIB:.1f} GiB + {ALLOCATOR_MARGIN:.0%}" if overhead else "not on CPU"),
    )
    steps = s.grad_accum if s.stage != "rollout" else 1
    fixed = weights + lora + optimizer
    phases = tuple((name, fixed + size) for name, size, present in (
        ("training", train_phase, training), ("generation", gen_phase, generates)) if present)
    return Plan(parts=parts, peak=peak, tokens_per_step=micro * steps * seq, sample=sample, settings=s, shape=model,
                logprobs_chunked=chunked, phases=phases)


def fixes(config: Mapping[str, Any], result: Plan, gib: float) -> list[tuple[str, Plan]]:
    """Changes of one or more settings, each with its plan: the single changes first, then combinations, the
    ones that fit first; at most eight."""
    s = result.settings
    options: list[tuple[str, dict[str, Any]]] = []
    if not s.load_in_4bit and not s.full:
        options.append(("--load-in-4bit", {"load_in_4bit": True}))
    if not s.gradient_checkpointing and s.stage != "rollout":
        options.append(("--gradient-checkpointing", {"gradient_checkpointing": True}))
    if s.batch_size > 1:  # the same completions per step: half the micro-batch, twice the accumulation
        options.append((f"--batch-size {s.batch_size // 2} --grad-accum {s.grad_accum * 2}",
                        {"batch_size": s.batch_size // 2, "grad_accum": s.grad_accum * 2}))
    if s.stage == "train-grpo" and s.num_generations > 2 and s.num_generations % 2 == 0:
        options.append((f"--num-generations {s.num_generations // 2}", {"num_generations": s.num_generations // 2}))
    for pixels, label in ((401_408, "512"), (200_704, "256")):
        if s.max_pixels > pixels:
            options.append((f"--max-pixels {pixels:,} ({label} tokens per image)".replace(",", ""),
                            {"max_pixels": pixels}))
            break
    if s.max_completion_length > 256:
        options.append((f"--max-completion-length {s.max_completion_length // 2}",
                        {"max_completion_length": s.max_completion_length // 2}))
    out: list[tuple[str, Plan]] = []
    sample = result.sample
    for label, change in options:
        new = replace(s, **change)
        out.append((label, plan(config, new, _rescaled(sample, result.shape, new) if "max_pixels" in change else sample)))
    combined: dict[str, Any] = {}
    labels: list[str] = []
    for label, change in options:
        combined.update(change)
        labels.append(label.split(" (")[0])
        if len(labels) > 1:
            new = replace(s, **combined)
            out.append((" ".join(labels), plan(config, new, _rescaled(sample, result.shape, new)
                                               if "max_pixels" in combined else sample)))
    out.sort(key=lambda item: (not item[1].fits(gib), item[0].count("--"), item[1].peak))
    return out[:8]


def _rescaled(sample: Sample, model: Shape, settings: Settings) -> Sample:
    """The worst-case sample with its images brought under a smaller pixel budget (text tokens kept)."""
    side = int(math.sqrt(settings.max_pixels))
    patches = min(sample.patches, image_patches(side, side, model, settings))  # one image per prompt assumed
    text = sample.prompt_tokens - sample.image_tokens
    return replace(sample, patches=patches, image_tokens=patches // model.merge ** 2,
                   prompt_tokens=text + patches // model.merge ** 2)


def settings_from(config: Any, device: str) -> Settings:
    """The plan settings of a stage config (train_grpo.Config, sft_coldstart.Config or rollout.Config)."""
    from rftcli.limits import DEFAULT_MAX_PIXELS

    stage = type(config).__module__.rsplit(".", 1)[-1].replace("_", "-")
    if stage == "train-grpo" and getattr(config, "rollouts", None) is not None:
        stage = "train-grpo-offline"
    if stage == "sft-coldstart":
        completion = getattr(config, "max_length", None) or 512
    else:
        completion = getattr(config, "max_completion_length", None) or getattr(config, "max_new_tokens", 64)
    batch = getattr(config, "batch_size", 8)
    batch = batch if isinstance(batch, int) else 8
    if stage == "rollout":  # rollout's batch_size counts prompts; the plan's counts sequences
        batch *= getattr(config, "num_generations", 1)
    return Settings(stage=stage, batch_size=batch,
                    grad_accum=getattr(config, "grad_accum", 1), num_generations=getattr(config, "num_generations", 1),
                    max_completion_length=completion, max_prompt_length=config.max_prompt_length,
                    max_pixels=config.max_pixels or DEFAULT_MAX_PIXELS,
                    min_pixels=config.min_pixels or DEFAULT_MIN_PIXELS, lora_r=getattr(config, "lora_r", 16),
                    lora_vision=getattr(config, "lora_vision", False),
                    target_modules=getattr(config, "target_modules", None), full=getattr(config, "full", False),
                    load_in_4bit=getattr(config, "load_in_4bit", False),
                    gradient_checkpointing=getattr(config, "gradient_checkpointing", False), device=device)


def preflight(config: Any, rows: list[Mapping[str, Any]]) -> Plan | None:
    """Before any weights load: the plan of a training stage's run on this device; a ValueError (one line) when
    it cannot fit. The device's memory is the config's `gpu_memory` GiB, else CUDA's total; no CUDA and no
    `gpu_memory`, or `preflight` off: no check (None)."""
    import torch

    gpu_memory = getattr(config, "gpu_memory", None)
    if not getattr(config, "preflight", True):
        return None
    if gpu_memory is None:
        if not torch.cuda.is_available():
            return None
        gpu_memory = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GIB
    try:
        model_config = read_model_config(config.model)
        model_shape = shape(model_config, config.model)
    except ValueError as err:
        if config.gpu_memory is None:
            return None  # a model the plan does not know: nothing to say on a GPU run
        raise ValueError(f"{err}; --gpu-memory cannot be checked for it: drop --gpu-memory or pass --no-preflight "
                         "to go on") from None
    settings = settings_from(config, "cuda")
    result = plan(model_config, settings, worst_case(rows, model_shape, settings),
                  where=config.model)
    device = "the device has"
    if getattr(config, "use_vllm", False) and getattr(config, "vllm_mode", "") == "colocate":
        gpu_memory *= 1 - VLLM_COLOCATE_SHARE  # vLLM in the training process reserves its share first
        device = f"the device leaves {1 - VLLM_COLOCATE_SHARE:.0%} of its memory to training beside vLLM:"
    if not result.fits(gpu_memory):
        best = [label for label, p in fixes(model_config, result, gpu_memory) if p.fits(gpu_memory)]
        hint = f"try {best[0]}" if best else "no single change of batch, image budget, 4-bit or checkpointing fits"
        raise ValueError(f"the run needs about {result.peak / GIB:.1f} GiB at its worst-case sample "
                         f"({result.sample.source}) but {device} {gpu_memory:.1f} GiB; {hint} "
                         "(rftcli plan shows the parts), or pass --no-preflight to go on")
    return result


def plan_run(model: str, settings: Settings, dataset: Path | None = None, split: str = "train",
             limit: int | None = None) -> Plan:
    """The plan of `settings` on `model` (its config.json) with the worst-case sample of `dataset`'s rows of
    `split` (the first `limit`), or of the budgets when no dataset is given."""
    config = read_model_config(model)
    model_shape = shape(config, model)
    sample = None
    if dataset is not None:
        from rftcli.stages.rollout import used_rows

        sample = worst_case(used_rows(dataset, split, limit).to_pylist(), model_shape, settings)
    return plan(config, settings, sample, where=model)
