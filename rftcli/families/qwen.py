"""Tiny Qwen2-VL, Qwen3-VL and Qwen3.5 models (`builtin:tiny-qwen2-vl`, `builtin:tiny-qwen3-vl`,
`builtin:tiny-qwen3.5`): the real architecture classes with random weights, a few hundred thousand parameters.

All three share Qwen's special tokens (`tiny_model.QWEN_SPECIAL_TOKENS`: `<|im_start|>`/`<|im_end|>` turns,
`<|vision_start|><|image_pad|>...<|vision_end|>` images; eos `<|im_end|>`, pad `<|endoftext|>`) in the byte-level
BPE of `tiny_model.build_tokenizer`, and each ships its published chat template as TRL keeps it
(`trl.chat_template_utils`): Qwen2-VL's is byte-identical to Qwen2.5-VL's; Qwen3-VL's; Qwen3.5's "think" template
(Qwen3.5-4B and larger). It opens `<think>` in the generation prompt, so a sampled completion starts inside the
think block, and an SFT target `<think>R</think><answer>A</answer>` renders as that same prompt + `R</think>...`:
training and sampling see one context. (The "nothink" template of the 2B and smaller checkpoints ends the prompt
with an empty think block but renders a target's think block in its place, so SFT would train on a context that
sampling never shows.) Completions without the opening tag earn nothing from the strict format reward
(`rftcli.rewards.format`).

- Qwen2-VL: `Qwen2VLForConditionalGeneration` (vision tower without window attention, 14 px patches) and
  `Qwen2VLProcessor`; a 56x56 image is 4 image tokens.
- Qwen3-VL: `Qwen3VLForConditionalGeneration` (16 px patches, learned position embeddings, DeepStack: a vision
  block's features added into the first text layers; tied input/output embeddings, as the 2B/4B checkpoints have)
  and `Qwen3VLProcessor`; a 56x56 image is resized to 64x64, 4 image tokens.
- Qwen3.5: `Qwen3_5ForConditionalGeneration`, natively multimodal with hybrid attention: one linear-attention
  layer (Gated DeltaNet: causal depthwise conv + gated delta rule) and one full-attention layer (gated output,
  partial M-RoPE), the 3:1 pattern of the real model cut to 1:1. Its fast kernels (flash-linear-attention,
  causal-conv1d) are CUDA-only and absent here: transformers falls back to its torch implementation (the gated
  delta rule in chunks of 64 tokens for prompts and training, step by step when decoding; the conv as
  `F.conv1d`), which is exact, only slower. Processor: `Qwen3VLProcessor`, as transformers maps qwen3_5;
  tokenizer `Qwen3_5Tokenizer`, which wraps the trained BPE in Qwen3.5's pre-tokenizer (it differs from Qwen2's,
  which the BPE was trained with, only on combining marks).

Video processors are left out (no torchvision on this stack; rftcli feeds images only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rftcli.families import save_random_model

TEXT_HIDDEN = 64  # bnb's 4-bit blocksize is 64: narrower language-model layers would not quantize
VISION_HIDDEN = 32
MIN_PIXELS, MAX_PIXELS = 56 * 56, 112 * 112  # 14 px patches: a 56x56 image is 4 merged tokens
MIN_PIXELS_16, MAX_PIXELS_16 = 64 * 64, 128 * 128  # 16 px patches: 56x56 becomes 64x64, 4 merged tokens


def _special_ids(tokenizer: Any) -> dict[str, Any]:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>", "<|image_pad|>",
                                                          "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    return dict(
        text=dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision=dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                    vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"]),
    )


def _image_processor(patch: int, min_pixels: int, max_pixels: int):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(patch_size=patch, temporal_patch_size=2, merge_size=2, min_pixels=min_pixels,
                                    max_pixels=max_pixels)


def build_qwen2_vl(out_dir: Path, seed: int) -> None:
    """`builtin:tiny-qwen2-vl`: Qwen2-VL with a 2-layer text model (64 wide) and a 2-block vision tower (32 wide)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from trl.chat_template_utils import qwen2_5_vl_chat_template  # Qwen2-VL ships the same template

    from rftcli.processor_compat import ensure_processor_loads_without_torchvision
    from rftcli.tiny_model import build_tokenizer

    ensure_processor_loads_without_torchvision()
    tokenizer = build_tokenizer()
    tokenizer.chat_template = qwen2_5_vl_chat_template
    processor = Qwen2VLProcessor(image_processor=_image_processor(14, MIN_PIXELS, MAX_PIXELS), tokenizer=tokenizer,
                                 chat_template=qwen2_5_vl_chat_template)
    special = _special_ids(tokenizer)
    head_half = TEXT_HIDDEN // 4 // 2  # 4 heads of 16: M-RoPE splits 8 rotary pairs 2:3:3
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         max_window_layers=2,
                         rope_parameters=dict(rope_type="default", rope_theta=1_000_000.0,
                                              mrope_section=[2, 3, head_half - 5]),
                         **special["text"]),
        vision_config=dict(depth=2, embed_dim=VISION_HIDDEN, hidden_size=TEXT_HIDDEN, mlp_ratio=2, num_heads=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        tie_word_embeddings=False, **special["vision"],
    )
    save_random_model(Qwen2VLForConditionalGeneration, config, processor, special["text"], out_dir, seed)


def build_qwen3_vl(out_dir: Path, seed: int) -> None:
    """`builtin:tiny-qwen3-vl`: Qwen3-VL with a 2-layer text model (64 wide, tied embeddings) and a 2-block vision
    tower (32 wide) whose first block feeds DeepStack."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from trl.chat_template_utils import qwen3_vl_chat_template

    from rftcli.processor_compat import ensure_processor_loads_without_torchvision
    from rftcli.tiny_model import build_tokenizer

    ensure_processor_loads_without_torchvision()
    tokenizer = build_tokenizer()
    tokenizer.chat_template = qwen3_vl_chat_template
    processor = Qwen3VLProcessor(image_processor=_image_processor(16, MIN_PIXELS_16, MAX_PIXELS_16),
                                 tokenizer=tokenizer, chat_template=qwen3_vl_chat_template)
    special = _special_ids(tokenizer)
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                         rope_parameters=dict(rope_type="default", rope_theta=5_000_000.0, mrope_section=[2, 3, 3],
                                              mrope_interleaved=True),
                         **special["text"]),
        vision_config=dict(depth=2, hidden_size=VISION_HIDDEN, intermediate_size=64, num_heads=2,
                           out_hidden_size=TEXT_HIDDEN, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           num_position_embeddings=64, deepstack_visual_indexes=[0]),
        tie_word_embeddings=True, **special["vision"],
    )
    save_random_model(Qwen3VLForConditionalGeneration, config, processor, special["text"], out_dir, seed)


def build_qwen3_5(out_dir: Path, seed: int) -> None:
    """`builtin:tiny-qwen3.5`: Qwen3.5 with one linear-attention (Gated DeltaNet) and one full-attention text layer
    (64 wide) and a 2-block vision tower (32 wide)."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer
    from trl.chat_template_utils import qwen3_5_think_chat_template

    from rftcli.processor_compat import ensure_processor_loads_without_torchvision
    from rftcli.tiny_model import build_tokenizer

    ensure_processor_loads_without_torchvision()
    tokenizer = build_tokenizer(tokenizer_class=Qwen3_5Tokenizer)
    tokenizer.chat_template = qwen3_5_think_chat_template
    processor = Qwen3VLProcessor(image_processor=_image_processor(16, MIN_PIXELS_16, MAX_PIXELS_16),
                                 tokenizer=tokenizer, chat_template=qwen3_5_think_chat_template)
    special = _special_ids(tokenizer)
    config = Qwen3_5Config(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=128, num_hidden_layers=2,
                         layer_types=["linear_attention", "full_attention"],
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=4096,
                         linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=16,
                         linear_num_key_heads=2, linear_num_value_heads=4,
                         # partial rotary 1/4 of head_dim 32: 4 rotary pairs, M-RoPE split 2:1:1
                         rope_parameters=dict(rope_type="default", rope_theta=10_000_000.0, partial_rotary_factor=0.25,
                                              mrope_section=[2, 1, 1], mrope_interleaved=True),
                         **special["text"]),
        vision_config=dict(depth=2, hidden_size=VISION_HIDDEN, intermediate_size=64, num_heads=2,
                           out_hidden_size=TEXT_HIDDEN, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           num_position_embeddings=64),
        tie_word_embeddings=False, **special["vision"],
    )
    save_random_model(Qwen3_5ForConditionalGeneration, config, processor, special["text"], out_dir, seed)
