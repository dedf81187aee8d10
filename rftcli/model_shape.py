"""A vision-language model's sizes from its config.json alone (no weights): widths, layers, heads, vocabulary,
exact parameter counts of the language model and the vision tower, the (in + out) widths LoRA adds to, and
the processor's resize rule that turns an image into vision patches. `rftcli.plan` builds its memory model on
these; Qwen2-VL, Qwen2.5-VL and Qwen3-VL are known.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Shape:
    """The sizes of a model that memory depends on, read from its config.json."""

    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    text_params: int
    """Language-model parameters without the embedding and lm_head."""
    quantizable: int
    """Weights of the language model's linear layers (NF4 under 4-bit)."""
    lora_in_out: int
    """Sum of (in + out) over the default LoRA targets (all language linear layers)."""
    lora_in_out_by_name: tuple[tuple[str, int], ...]
    """(in + out) per target name (q_proj, ...) summed over layers."""
    vision_params: int
    vision_hidden: int
    vision_intermediate: int
    vision_depth: int
    vision_lora_in_out: int
    patch: int
    merge: int

    @property
    def params(self) -> int:
        return self.text_params + self.vocab * self.hidden * (1 if self.tied else 2) + self.vision_params


def read_model_config(spec: str) -> dict[str, Any]:
    """The config.json of a model argument: a folder, a .json file, a built-in model, or a hub id whose
    config is in the local cache (no network). An adapter's is its base's."""
    from rftcli import tiny_model
    from rftcli.loading import _quiet_transformers, adapter_base, is_adapter, resolve

    _quiet_transformers()  # a built-in model is saved on first use: no progress bar
    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        file = path
    else:
        folder = resolve(spec)
        while not tiny_model.is_builtin(folder) and is_adapter(folder):
            folder = resolve(adapter_base(folder))
        file = Path(folder, "config.json")
        if not file.is_file() and not Path(folder).exists():
            try:
                from huggingface_hub import try_to_load_from_cache

                cached = try_to_load_from_cache(spec, "config.json")
            except Exception:  # not a hub id
                cached = None
            if not isinstance(cached, str):
                raise ValueError(f"{spec}: no config.json here and none in the local hub cache; give a model folder "
                                 "or its config.json")
            file = Path(cached)
    if not file.is_file():
        raise ValueError(f"{spec}: no config.json in {file.parent}")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{file}: not a JSON object")
    return config


def _int(cfg: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = cfg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def shape(config: Mapping[str, Any], where: str = "config.json") -> Shape:
    """The sizes of a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model from its config (parameter counts exact)."""
    model_type = config.get("model_type")
    if model_type not in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        raise ValueError(f"{where}: model_type {model_type!r} is not planned for; rftcli plan knows qwen2_vl, "
                         "qwen2_5_vl and qwen3_vl")
    text = config.get("text_config") or {}
    text = {**{k: v for k, v in config.items() if k not in ("text_config", "vision_config")}, **text}
    vision = config.get("vision_config") or {}
    h, i = _int(text, "hidden_size", where), _int(text, "intermediate_size", where)
    layers, heads = _int(text, "num_hidden_layers", where), _int(text, "num_attention_heads", where)
    kv = _int(text, "num_key_value_heads", where, heads)
    hd = text.get("head_dim") or h // heads
    vocab = _int(text, "vocab_size", where)
    tied = bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    q, kvd = heads * hd, kv * hd
    qwen3 = model_type == "qwen3_vl"
    bias = (q + 2 * kvd) if not qwen3 or text.get("attention_bias") else 0  # Qwen2 has q/k/v biases
    names = {"q_proj": h + q, "k_proj": h + kvd, "v_proj": h + kvd, "o_proj": q + h,
             "gate_proj": h + i, "up_proj": h + i, "down_proj": i + h}
    linear = h * q + 2 * h * kvd + q * h + 3 * h * i
    per_layer = linear + bias + 2 * h + (2 * hd if qwen3 else 0)  # two norms (+ q/k norms in Qwen3)
    text_params = layers * per_layer + h
    # Vision tower and merger.
    vd, vh = _int(vision, "depth", where), _int(vision, "hidden_size" if "hidden_size" in vision else "embed_dim", where)
    p, m = _int(vision, "patch_size", where, 14), _int(vision, "spatial_merge_size", where, 2)
    tp, cin = vision.get("temporal_patch_size", 2), vision.get("in_channels", vision.get("in_chans", 3))
    out = vision.get("out_hidden_size", vision.get("hidden_size_out", h)) if model_type != "qwen2_vl" else h
    merged = vh * m * m
    if model_type == "qwen2_vl":
        vi = int(vh * vision.get("mlp_ratio", 4))
        block = 4 * vh + (3 * vh * vh + 3 * vh) + (vh * vh + vh) + (vh * vi + vi) + (vi * vh + vh)
        vision_params = cin * tp * p * p * vh + vd * block + 2 * vh + merged * merged + merged + merged * out + out
        vision_lora = vd * ((vh + 3 * vh) + 2 * vh + (vh + vi) + (vi + vh))
    elif model_type == "qwen2_5_vl":
        vi = _int(vision, "intermediate_size", where)
        block = 2 * vh + (3 * vh * vh + 3 * vh) + (vh * vh + vh) + 2 * (vh * vi + vi) + (vi * vh + vh)
        vision_params = cin * tp * p * p * vh + vd * block + vh + merged * merged + merged + merged * out + out
        vision_lora = vd * ((vh + 3 * vh) + 2 * vh + 2 * (vh + vi) + (vi + vh))
    else:
        vi = _int(vision, "intermediate_size", where)
        block = 4 * vh + (3 * vh * vh + 3 * vh) + (vh * vh + vh) + (vh * vi + vi) + (vi * vh + vh)
        mergers = 1 + len(vision.get("deepstack_visual_indexes") or [])
        merger = merged * merged + merged + merged * out + out
        pos = vision.get("num_position_embeddings", 0) * vh
        # The final merger norms the vision width; deepstack mergers norm the merged width (LayerNorm: w and b).
        vision_params = (cin * tp * p * p * vh + vh + pos + vd * block + mergers * merger + 2 * vh
                         + (mergers - 1) * 2 * merged)
        vision_lora = vd * ((vh + 3 * vh) + 2 * vh + (vh + vi) + (vi + vh))
    return Shape(model_type=model_type, hidden=h, intermediate=i, layers=layers, heads=heads, kv_heads=kv,
                 head_dim=hd, vocab=vocab, tied=tied, text_params=text_params, quantizable=layers * linear,
                 lora_in_out=layers * sum(names.values()),
                 lora_in_out_by_name=tuple((n, layers * v) for n, v in names.items()),
                 vision_params=vision_params, vision_hidden=vh, vision_intermediate=vi, vision_depth=vd,
                 vision_lora_in_out=vision_lora, patch=p, merge=m)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule: sides rounded to multiples of `factor` (patch x merge), the area brought within
    [min_pixels, max_pixels] keeping the aspect ratio."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar
