"""`builtin:tiny-llava-onevision`: a tiny LLaVA-OneVision in the layout transformers ships
(llava-hf/llava-onevision-qwen2-0.5b-ov-hf).

`LlavaOnevisionForConditionalGeneration` (SigLIP vision tower, 2-layer MLP projector, the learned `image_newline`
row, Qwen2 language model) with `LlavaOnevisionProcessor`, its PIL image processor (AnyRes: a base tile plus a grid
of tiles picked from `image_grid_pinpoints`) and the chat template of transformers' conversion script
(`convert_llava_onevision_weights_to_hf.py`, with its `{% generation %}` tags). The tokenizer holds Qwen2-Instruct's
special tokens (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`) plus `<image>` and `<video>`; eos `<|im_end|>`, pad
`<|endoftext|>`.

Sizes: text 64 wide x 2 layers (4 heads, 2 kv heads), vision 32 wide x 2 layers. A tile is 28x28 pixels = 2x2
patches of 14 px (4 features, "full" selection: SigLIP has no CLS token); the grid pinpoints are 28x28, 28x56 and
56x28, so a 56x56 image is the base tile plus one grid tile: 4 base + 2x2 grid + 2 newline = 10 `<image>` tokens,
and a 2:1 image gets a two-tile grid. Where it departs from the 0.5B checkpoint: random weights, the ~1k-token
tokenizer of `tiny_model.build_tokenizer` (so token ids differ), tiles of 28 px instead of 384.
"""

from __future__ import annotations

from pathlib import Path

from rftcli.families import save_random_model
from rftcli.tiny_model import build_tokenizer

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
TILE = 28
"""Tile side in pixels (SigLIP's image size)."""
PATCH = 14
NUM_IMAGE_TOKENS = (TILE // PATCH) ** 2
"""Vision features per tile: 4."""
GRID_PINPOINTS = [[TILE, TILE], [TILE, 2 * TILE], [2 * TILE, TILE]]

# The template of the -hf checkpoints (convert_llava_onevision_weights_to_hf.py), verbatim.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\\n' }}"
    "{% endfor %}"
    "{# Render all video then #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\\n' }}"
    "{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}"
    "{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}"
    "{% endfor %}"
    "{% endif %}"
    "{{'<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


def build(out_dir: Path, seed: int) -> None:
    """Build the tiny LLaVA-OneVision model, tokenizer and processor with weights from `seed`; save them into
    `out_dir`."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionProcessor,
    )
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from rftcli.processor_compat import ensure_processor_loads_without_torchvision

    ensure_processor_loads_without_torchvision()
    tokenizer = build_tokenizer(SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": TILE, "width": TILE}, image_grid_pinpoints=GRID_PINPOINTS, do_pad=True,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], do_convert_rgb=True,
    )  # fmt: skip
    processor = LlavaOnevisionProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                        num_image_tokens=NUM_IMAGE_TOKENS, vision_feature_select_strategy="full",
                                        vision_aspect_ratio="anyres_max_9", chat_template=CHAT_TEMPLATE)

    special_ids = dict(bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                       eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                       pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    config = LlavaOnevisionConfig(
        text_config=dict(
            model_type="qwen2", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            rope_parameters=dict(rope_type="default", rope_theta=1_000_000.0), tie_word_embeddings=False,
            **special_ids,
        ),
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, image_size=TILE, patch_size=PATCH, vision_use_head=False,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1, image_grid_pinpoints=GRID_PINPOINTS,
        vision_aspect_ratio="anyres_max_9", tie_word_embeddings=False,
    )  # fmt: skip
    save_random_model(LlavaOnevisionForConditionalGeneration, config, processor,
                      special_ids, out_dir, seed)
