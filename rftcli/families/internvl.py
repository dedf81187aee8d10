"""`builtin:tiny-internvl`: a tiny InternVL3 in the layout transformers ships (OpenGVLab/InternVL3-1B-hf).

`InternVLForConditionalGeneration` (InternViT-style vision tower, pixel-shuffle + MLP projector, Qwen2 language
model) with `InternVLProcessor`, the Got-OCR2 image processor (PIL backend) and the chat template of the converted
checkpoints (transformers' `convert_internvl_weights_to_hf.py`). The tokenizer holds Qwen2.5-VL's special tokens
plus InternVL's `<img>`, `</img>`, `<IMG_CONTEXT>`, `<quad>`, `</quad>`, `<ref>`, `</ref>`, `<box>`, `</box>` and
`<video>`, named as the processor reads them (start/end/context image token, video token); eos `<|im_end|>`, pad
`<|endoftext|>`.

Sizes: text 64 wide x 2 layers (4 heads, 2 kv heads), vision 32 wide x 2 layers. Each image tile is 56x56 pixels
= 4x4 patches of 14 px, which the pixel shuffle (downsample ratio 0.5) turns into 2x2 = 4 `<IMG_CONTEXT>` tokens
between `<img>` and `</img>`. Dynamic tiling is kept but minimal (at most 2 tiles): a square image is one tile,
a 2:1 image two tiles plus InternVL's thumbnail tile. Where it departs from InternVL3-1B: random weights, the
~1k-token tokenizer of `tiny_model.build_tokenizer` (so token ids differ), no default system prompt.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from rftcli.families import save_random_model
from rftcli.tiny_model import QWEN_SPECIAL_TOKENS, build_tokenizer

INTERNVL_TOKENS = ("<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>",
                   "<video>")
# The tokenizer's named tokens that InternVLProcessor reads (tokenizer.start_image_token, ...).
NAMED_TOKENS = dict(start_image_token="<img>", end_image_token="</img>", context_image_token="<IMG_CONTEXT>",
                    video_token="<video>")
TILE = 56
"""Tile side in pixels (the vision tower's image size)."""
PATCH = 14
IMAGE_SEQ_LENGTH = (TILE // PATCH // 2) ** 2
"""`<IMG_CONTEXT>` tokens per tile after the pixel shuffle (downsample ratio 0.5): 4."""

# The template of the InternVL3 -hf checkpoints (convert_internvl_weights_to_hf.py), verbatim.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif content['type'] == 'video' %}"
    "{{ '<video>\\n' }}"
    "{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{'<|im_end|>\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{'<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


def build(out_dir: Path, seed: int) -> None:
    """Build the tiny InternVL model, tokenizer and processor with weights from `seed`; save them into `out_dir`."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    from rftcli.processor_compat import ensure_processor_loads_without_torchvision

    ensure_processor_loads_without_torchvision()
    tokenizer = build_tokenizer(QWEN_SPECIAL_TOKENS + INTERNVL_TOKENS, eos_token="<|im_end|>",
                                pad_token="<|endoftext|>", tokenizer_class=partial(Qwen2Tokenizer, **NAMED_TOKENS))
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": TILE, "width": TILE}, crop_to_patches=True, min_patches=1, max_patches=2,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_convert_rgb=True,
    )  # fmt: skip
    processor = InternVLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_length=IMAGE_SEQ_LENGTH, chat_template=CHAT_TEMPLATE)

    special_ids = dict(bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                       eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                       pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    config = InternVLConfig(
        text_config=dict(
            model_type="qwen2", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            rope_parameters=dict(rope_type="default", rope_theta=1_000_000.0), tie_word_embeddings=False,
            **special_ids,
        ),
        vision_config=dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            image_size=TILE, patch_size=PATCH, norm_type="layer_norm", use_qk_norm=False, attention_bias=True,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=IMAGE_SEQ_LENGTH, downsample_ratio=0.5, vision_feature_layer=-1,
        vision_feature_select_strategy="default", tie_word_embeddings=False,
    )  # fmt: skip
    save_random_model(InternVLForConditionalGeneration, config, processor,
                      special_ids, out_dir, seed)
