"""The `vllm` backend of `rollout`: the same samples-with-log-probs contract as `rftcli.generation`, served
by vLLM (optional extra: `pip install "rftcli[vllm]"`, CUDA GPUs only).

UNTESTED: vLLM is not installed where rftcli's tests run (CPU machines), and its wheels are too large for
the GPU machines the project measures on, so this code path has never run. It is written against vLLM's
documented offline API (`LLM`, `SamplingParams`, `LoRARequest`, engine argument `logprobs_mode`, which
vLLM added in 0.10.2). No speed or equality figures exist for it; treat its first run as a test.

What it does, and how it matches the `hf` backend:
- Prompts are the same text: the checkpoint's processor applies its chat template to the same messages;
  images go in as PIL images with the processor's own min/max pixel limits (`mm_processor_kwargs`).
- Each completion is its own request with n=1 and `seed=row_seed(seed, prompt id, j)`, so a row's samples
  do not depend on the other requests. vLLM's seeded sampler is not the `hf` backend's, so the two
  backends draw different samples for the same seed; and vLLM does not promise identical logits for a
  request across batch compositions unless run batch-invariant.
- Log-probs are vLLM's `processed_logprobs`: after temperature, top-k and top-p, i.e. under the
  distribution the token was sampled from, as the `hf` backend stores them.
- Image placeholder tokens are kept out with a logit bias of -100; unlike the `hf` backend, the
  stored log-probs are then those of the distribution without them (the difference is
  -log(1 - p(placeholders)), ~0 for a trained model).
- Stop strings stay in the completion (`include_stop_str_in_output`); the text is decoded from the token
  ids with the same tokenizer as the `hf` backend; eos ids are the same list.
- An adapter runs through vLLM's LoRA support on its full-precision base (`enable_lora`, a
  `LoRARequest` per call); nothing is merged. An adapter whose base is itself an adapter, or one that
  adapts the vision tower, is refused with a message saying to `rftcli merge` it first.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rftcli.generation import Sample, SamplingSettings, eos_id_list, placeholder_ids


def require_vllm() -> None:
    """Fail with one line when vLLM cannot be used here."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise ImportError("the vllm backend needs vLLM, the 'vllm' extra of rftcli (CUDA GPUs only): "
                          "pip install vllm, or use --backend hf") from None
    import torch

    if not torch.cuda.is_available():
        raise ValueError("the vllm backend needs a CUDA GPU; use --backend hf")


def _adapter_rank_and_check(path: str) -> int:
    """LoRA rank of an adapter folder; refuses adapters that touch the vision tower."""
    cfg = json.loads(Path(path, "adapter_config.json").read_text())
    weights = Path(path, "adapter_model.safetensors")
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            if any("visual" in k for k in f.keys()):
                raise ValueError(f"{path}: the adapter adapts the vision tower, which vLLM's LoRA does not "
                                 "serve; merge it first (rftcli merge) or use --backend hf")
    return int(cfg.get("r", 16))


def _pixel_limits(processor: Any) -> dict[str, int]:
    ip = getattr(processor, "image_processor", None)
    size = getattr(ip, "size", None)
    out = {}
    for name, key in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
        value = getattr(ip, name, None) or getattr(size, key, None)
        if value is None and isinstance(size, Mapping):
            value = size.get(key)
        if value:
            out[name] = int(value)
    return out


def _vllm_dtype(dtype: str) -> str:
    import torch

    if dtype != "auto":
        return dtype
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


class VLLMPolicy:
    """A checkpoint served by vLLM's offline `LLM`. The engine starts on the first `generate`, sized by
    `reserve` (longest prompt + completion, most images per prompt)."""

    backend = "vllm"

    def __init__(self, spec: str, *, base: str | None = None, dtype: str = "auto", trust_remote_code: bool = False,
                 allow_pickle: bool = False):
        from rftcli.loading import adapter_base, check_weights, is_adapter, load_processor, resolve

        require_vllm()
        self.spec = spec
        path = resolve(spec)
        self.lora_path: str | None = None
        self.lora_rank = 0
        if is_adapter(path):
            base_spec = adapter_base(path, base)
            if is_adapter(resolve(base_spec)):
                raise ValueError(f"{spec}: its base {base_spec} is itself an adapter; merge it first (rftcli merge)")
            check_weights(Path(path), adapter=True, allow_pickle=allow_pickle)
            self.lora_path, self.lora_rank = path, _adapter_rank_and_check(path)
            path = resolve(base_spec)
        if Path(path).is_dir():  # vLLM reads the weights itself: the same safetensors-only rule
            check_weights(Path(path), adapter=False, allow_pickle=allow_pickle)
        self.model_path = path
        self.dtype = _vllm_dtype(dtype)
        self.trust_remote_code = trust_remote_code
        self.processor = load_processor(spec, trust_remote_code)
        self.banned = {t: -100.0 for t in placeholder_ids(self.processor)}
        self.max_model_len: int | None = None
        self.max_images = 1
        self.llm = None
        self._eos: list[int] | None = None

    def reserve(self, max_prompt_tokens: int, max_new_tokens: int, max_images: int) -> None:
        # A small margin: prompt lengths are estimated from image sizes before vLLM's own processing.
        self.max_model_len = max_prompt_tokens + max_new_tokens + 32
        self.max_images = max(1, max_images)

    def _engine(self):
        if self.llm is not None:
            return self.llm
        from transformers import GenerationConfig
        from vllm import LLM

        kwargs: dict[str, Any] = dict(model=self.model_path, dtype=self.dtype, seed=0,
                                      trust_remote_code=self.trust_remote_code,
                                      limit_mm_per_prompt={"image": self.max_images},
                                      mm_processor_kwargs=_pixel_limits(self.processor),
                                      logprobs_mode="processed_logprobs")
        if self.max_model_len:
            kwargs["max_model_len"] = self.max_model_len
        if self.lora_path:
            kwargs.update(enable_lora=True, max_lora_rank=self.lora_rank, max_loras=1)
        try:
            self.llm = LLM(**kwargs)
        except TypeError as err:
            if "logprobs_mode" in str(err):
                raise ImportError("the vllm backend needs vLLM >= 0.10.2 (engine argument logprobs_mode)") from None
            raise

        try:
            eos = GenerationConfig.from_pretrained(self.model_path).eos_token_id
        except OSError:  # no generation_config.json: the tokenizer's eos alone
            eos = None
        self._eos = eos_id_list(eos, self.processor.tokenizer.eos_token_id)
        return self.llm

    def generate(self, rows: Sequence[Mapping[str, Any]], settings: SamplingSettings,
                 seeds: Sequence[Sequence[int]]) -> list[list[Sample]]:
        from vllm import SamplingParams

        from rftcli.chat import decode_images, prompt_messages

        llm = self._engine()
        lora = None
        if self.lora_path:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("policy", 1, self.lora_path)
        prompts, params = [], []
        for row, group in zip(rows, seeds, strict=True):
            text = self.processor.apply_chat_template(prompt_messages(row), add_generation_prompt=True, tokenize=False)
            images = decode_images(row)
            prompt = {"prompt": text, **({"multi_modal_data": {"image": images}} if images else {})}
            for seed in group:
                prompts.append(prompt)
                params.append(SamplingParams(
                    n=1, seed=seed, temperature=settings.temperature, top_p=settings.top_p,
                    top_k=settings.top_k if settings.top_k > 0 else -1, max_tokens=settings.max_new_tokens,
                    stop=list(settings.stop) or None, include_stop_str_in_output=True,
                    stop_token_ids=None if settings.ignore_eos else self._eos,
                    ignore_eos=settings.ignore_eos, logprobs=0, skip_special_tokens=True,
                    logit_bias=self.banned or None))
        outputs = llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
        tokenizer = self.processor.tokenizer
        flat = []
        for out in outputs:
            c = out.outputs[0]
            ids = list(c.token_ids)
            logprobs = [float(c.logprobs[t][tok].logprob) for t, tok in enumerate(ids)]
            flat.append(Sample(text=tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids, logprobs=logprobs,
                               finish_reason="length" if c.finish_reason == "length" else "stop"))
        return [flat[b * settings.n:(b + 1) * settings.n] for b in range(len(rows))]

    def close(self) -> None:
        import torch

        self.llm = None
        gc.collect()
        torch.cuda.empty_cache()
