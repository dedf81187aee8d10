"""The plan's activation terms are what autograd saves: small Qwen2.5-VL and Qwen3-VL language models with PEFT
LoRA (all targets and two of them, fp32 and bf16 adapters, full fine-tuning) on a 16-bit base, one forward under
saved-tensor hooks, two depths; the bytes one more decoder layer adds per token equal
`rftcli.plan.saved_per_token_layer`; likewise the vision tower with LoRA on every linear layer, per patch and
block, against `saved_per_patch_block`. A wrong width, dtype or count in a formula fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rftcli import plan
from rftcli.model_shape import shape

ROOT = Path(__file__).resolve().parents[1]
TOKENS = 2 * 40


def small_config(name: str, layers: int) -> dict:
    """The published config at small widths (head_dim 128 kept: the rotary sections need it; 4 query and 2
    key-value heads)."""
    config = json.loads((ROOT / "bench" / "configs" / name / "config.json").read_text())
    text = config.get("text_config", config)
    for c in (config, text):
        c.update(hidden_size=512, intermediate_size=704, num_attention_heads=4, num_key_value_heads=2,
                 vocab_size=512, num_hidden_layers=layers)
        c.pop("max_window_layers", None)
        c.pop("bos_token_id", None)
        c.pop("eos_token_id", None)
    text["head_dim"] = 128
    vision = config["vision_config"]
    vision.update(depth=1, hidden_size=32, intermediate_size=64, num_heads=1, out_hidden_size=512)
    if "fullatt_block_indexes" in vision:
        vision["fullatt_block_indexes"] = [0]
    if "deepstack_visual_indexes" in vision:
        vision["deepstack_visual_indexes"] = [0]
    return config


def trainable_model(config: dict, adapter_dtype, targets: str | None, full: bool, vision: bool = False):
    """The bf16 model of `config` in train mode: every weight trainable (`full`), or PEFT LoRA rank 16 on the
    language model's linear layers (`targets` of them; with `vision` the tower's too) in `adapter_dtype`."""
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForImageTextToText

    from rftcli.training import lora_config, lora_target_modules

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(**config))
    finally:
        torch.set_default_dtype(torch.float32)
    if full:
        model.requires_grad_(True)
    else:
        model = get_peft_model(model, lora_config(16, 32, 0.0, target_modules=lora_target_modules(
            model, vision=vision, names=targets)))
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(adapter_dtype)
    return model.train()


def saved_by(model, forward) -> int:
    """Bytes of the tensors autograd saves while `forward()` runs, each storage once, parameters aside."""
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in params)


def saved_bytes(config: dict, adapter_dtype, targets: str | None, full: bool) -> int:
    model = trainable_model(config, adapter_dtype, targets, full)
    ids = torch.randint(0, 500, (2, TOKENS // 2), generator=torch.Generator().manual_seed(0))
    return saved_by(model, lambda: model(input_ids=ids).logits[..., :4].float().sum())


@pytest.mark.parametrize("name", ["qwen2.5-vl-3b-instruct", "qwen3-vl-4b-instruct"])
@pytest.mark.parametrize("adapters,targets", [("fp32", None), ("bf16", None), ("fp32", "q_proj,v_proj"),
                                              ("bf16", "o_proj,down_proj"), ("full", None)])
def test_saved_tensors_per_token_and_layer_equal_the_plan(name, adapters, targets):
    full = adapters == "full"
    dtype = torch.float32 if adapters == "fp32" else torch.bfloat16
    one, two = (saved_bytes(small_config(name, n), dtype, targets, full) for n in (1, 2))
    measured = (two - one) / TOKENS
    names = {t.strip() for t in targets.split(",")} if targets else None
    predicted = plan.saved_per_token_layer(shape(small_config(name, 2)), names, 4 if adapters == "fp32" else 2, 16,
                                           full)
    assert predicted == pytest.approx(measured, rel=0.01), (measured, predicted)


def vision_saved_bytes(name: str, depth: int, adapter_dtype) -> tuple[int, int]:
    """Saved bytes of the vision tower's forward with LoRA on every vision linear layer, and its patches."""
    config = small_config(name, 1)
    vision = config["vision_config"]
    vision.update(depth=depth, hidden_size=128, intermediate_size=352, num_heads=2)
    if "fullatt_block_indexes" in vision:
        vision["fullatt_block_indexes"] = [depth - 1]
    model = trainable_model(config, adapter_dtype, None, False, vision=True)
    tower = next(m for n, m in model.named_modules() if n.endswith("visual"))
    patch, temporal = vision["patch_size"], vision.get("temporal_patch_size", 2)
    patches = 16 * 16
    pixels = torch.randn(patches, 3 * temporal * patch * patch, dtype=torch.bfloat16,
                         generator=torch.Generator().manual_seed(0))
    return saved_by(model, lambda: tower(pixels, grid_thw=torch.tensor([[1, 16, 16]]))), patches


@pytest.mark.parametrize("name", ["qwen2.5-vl-3b-instruct", "qwen3-vl-4b-instruct"])
@pytest.mark.parametrize("adapters", ["fp32", "bf16"])
def test_saved_tensors_per_patch_and_vision_block_equal_the_plan(name, adapters):
    dtype = torch.float32 if adapters == "fp32" else torch.bfloat16
    (one, patches), (two, _) = (vision_saved_bytes(name, depth, dtype) for depth in (1, 2))
    config = small_config(name, 1)
    config["vision_config"].update(hidden_size=128, intermediate_size=352)
    predicted = plan.saved_per_patch_block(shape(config), 4 if adapters == "fp32" else 2, 16)
    assert predicted == pytest.approx((two - one) / patches, rel=0.01), ((two - one) / patches, predicted)
