"""The vision side stays out of 4-bit under every family's module names, as transformers matches skip names."""

from __future__ import annotations

import pytest
from transformers.quantizers.quantizers_utils import should_convert_module

from rftcli.loading import quantization_config

# Linear layers of real families (transformers 5 names): vision side first, then language side.
VISION = ["model.visual.blocks.0.attn.qkv", "model.visual.merger.mlp.0",                     # Qwen2.5-VL
          "model.vision_tower.encoder.layers.0.self_attn.q_proj",                           # Gemma 3 (SigLIP)
          "model.vision_model.encoder.layers.1.mlp.fc1", "model.connector.modality_projection.proj",  # Idefics3
          "model.multi_modal_projector.linear_1", "lm_head"]                                # LLaVA-OV, InternVL
LANGUAGE = ["model.language_model.layers.0.self_attn.q_proj", "model.text_model.layers.1.mlp.down_proj",
            "model.language_model.layers.11.mlp.gate_proj"]


@pytest.mark.parametrize("name", VISION)
def test_vision_side_and_lm_head_are_skipped(name):
    assert not should_convert_module(name, quantization_config("float32").llm_int8_skip_modules)


@pytest.mark.parametrize("name", LANGUAGE)
def test_language_model_is_quantized(name):
    assert should_convert_module(name, quantization_config("float32").llm_int8_skip_modules)
