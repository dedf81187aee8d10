"""`builtin:tiny-smolvlm2`: a tiny random SmolVLM2 (`SmolVLMForConditionalGeneration`, the Idefics3 architecture).

The real pieces: SmolVLM's SigLIP-style vision transformer, its connector (pixel shuffle by `scale_factor`, then a
linear projection), a Llama text decoder, the image-token layout `<fake_token_around_image><global-img><image>...
<fake_token_around_image>`, turns ending in `<end_of_utterance>`, and SmolVLM2's chat template ("User:",
"Assistant:") as transformers ships it (`transformers.models.smolvlm.processing_smolvlm.DEFAULT_CHAT_TEMPLATE`).

The processor is `Idefics3Processor` with `Idefics3ImageProcessorPil`, not `SmolVLMProcessor`: on this stack
`SmolVLMProcessor` cannot be built (it requires the `num2words` package, which rftcli does not install, and it
declares a video processor, which transformers provides only with torchvision). For images the two write the same
prompt string (global image tag, `image_seq_len` `<image>` tokens between fake tokens) and the same pixel layout
(`pixel_values` [B, images, 3, H, W] with `pixel_attention_mask`), so the model sees what SmolVLM's processor gives.

Sizes: image splitting off, every image resized to 56x56 = 4x4 patches of 14 px, pixel-shuffled by 2 to 4 image
tokens; the text decoder is 64 wide (bnb's 4-bit blocksize), 2 layers. Departures from the real model: the
tokenizer is rftcli's ~1k-token byte-level BPE (`tiny_model.build_tokenizer`, a `Qwen2Tokenizer`; SmolLM2's is a
49k-token GPT-2-style BPE) with SmolVLM's special tokens first, and the weights are random.
"""

from __future__ import annotations

from pathlib import Path

from rftcli.families import save_random_model

IMAGE_SIZE = 56
PATCH_SIZE = 14
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2  # 4 image tokens per image

# SmolLM2's specials first (<|endoftext|> 0, <|im_start|> 1, <|im_end|> 2), then SmolVLM's image and turn tokens
# and the row/column tags of image splitting, as SmolVLM2's tokenizer has them.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>",
                  "<end_of_utterance>", "<global-img>",
                  *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)))

# SmolVLM2's chat template as transformers ships it (processing_smolvlm.DEFAULT_CHAT_TEMPLATE).
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'] is string %}"
    "{{': ' + message['content']}}{% else %}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}"
    "{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}"
    "{% endif %}"
)


def build(out_dir: Path, seed: int) -> None:
    """Build tiny-smolvlm2 into the empty folder `out_dir`."""
    from transformers import Idefics3Processor, SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    from rftcli.tiny_model import build_tokenizer

    # As SmolVLM2's tokenizer_config.json: bos <|im_start|>, eos <end_of_utterance>, pad <|im_end|>.
    tokenizer = build_tokenizer(SPECIAL_TOKENS, eos_token="<end_of_utterance>", pad_token="<|im_end|>",
                                bos_token="<|im_start|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=IMAGE_SEQ_LEN,
                                  chat_template=CHAT_TEMPLATE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    special_ids = dict(bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<end_of_utterance>"],
                       pad_token_id=ids["<|im_end|>"])
    config = SmolVLMConfig(
        text_config=dict(
            model_type="llama", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            rms_norm_eps=1e-5, tie_word_embeddings=False, **special_ids,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
        ),
        scale_factor=SCALE_FACTOR, image_token_id=ids["<image>"], tie_word_embeddings=False, **special_ids,
    )
    save_random_model(SmolVLMForConditionalGeneration, config, processor,
                      special_ids, out_dir, seed)
