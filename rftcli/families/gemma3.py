"""`builtin:tiny-gemma3`: a tiny random Gemma 3 vision-language model (`Gemma3ForConditionalGeneration`).

The real pieces: Gemma 3's text decoder (sliding + full attention layers, q/k norms, scaled embeddings tied to the
LM head), a SigLIP vision tower, Gemma 3's multimodal projector (average pooling to `mm_tokens_per_image` soft
tokens), `Gemma3Processor` with the PIL `Gemma3ImageProcessorPil`, a `GemmaTokenizer` (SentencePiece-style BPE:
"▁" for spaces, byte fallback, <bos> added in front), and Gemma 3's chat template (google/gemma-3-4b-it).

Sizes: SigLIP at 56x56 with 14 px patches is 4x4 patches, pooled 2x2 to 4 image tokens per image; the text decoder
is 64 wide (bnb's 4-bit blocksize) with 2 layers, one sliding (window 8) and one full. Departures from the real
model: the tokenizer is a ~1k-token BPE trained here on rftcli's synthetic corpus (real: 262k tokens), so the
special tokens sit at ids 0..9 in Gemma's order (pad 0, eos 1, bos 2, unk 3, mask 4), byte tokens <0x00>..<0xFF>
follow, and the weights are random.
"""

from __future__ import annotations

from pathlib import Path

from rftcli.families import save_random_model

# Gemma's specials in Gemma's order (pad 0, eos 1, bos 2, unk 3, mask 4), then the turn and image markers.
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
                  "<start_of_image>", "<end_of_image>", "<image_soft_token>")
IMAGE_SIZE = 56
PATCH_SIZE = 14
MM_TOKENS_PER_IMAGE = 4  # 4x4 patches average-pooled 2x2
VOCAB_SIZE = 1024

# Gemma 3's chat template, as google/gemma-3-4b-it's tokenizer_config.json has it (image parts included).
CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)


def build_tokenizer():
    """A `GemmaTokenizer` over a BPE trained on rftcli's synthetic corpus the way Gemma's vocabulary is laid out:
    spaces become "▁" (a piece starts with it), unknown characters fall back to byte tokens, <bos> is added in
    front. The same every time."""
    import json

    from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import AddedToken, GemmaTokenizer

    from rftcli.tiny_model import REASONING_TOKENS, _corpus

    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    bpe = Tokenizer(BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    # Training only: pieces start at each "▁", so no merge spans two words (GemmaTokenizer itself does not split).
    bpe.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE - len(REASONING_TOKENS),
                                  special_tokens=[*SPECIAL_TOKENS, *byte_tokens],  # ids 0..n-1, in this order
                                  min_frequency=2, show_progress=False)
    bpe.train_from_iterator(_corpus(), trainer)
    model_json = json.loads(bpe.to_str())["model"]
    tokenizer = GemmaTokenizer(
        vocab=model_json["vocab"], merges=[tuple(m) for m in model_json["merges"]],
        unk_token="<unk>", bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", mask_token="<mask>",
        # Named as Gemma 3's tokenizer_config.json names them; Gemma3Processor reads boi/eoi/image_token(_id).
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"},
        add_bos_token=True, padding_side="left", model_max_length=4096,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])
    return tokenizer


def build(out_dir: Path, seed: int) -> None:
    """Build tiny-gemma3 into the empty folder `out_dir`."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                              image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE,
                                image_seq_length=MM_TOKENS_PER_IMAGE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    special_ids = dict(bos_token_id=ids["<bos>"], pad_token_id=ids["<pad>"])
    eos = [ids["<eos>"], ids["<end_of_turn>"]]  # as Gemma 3's generation_config.json: a turn's end stops too
    config = Gemma3Config(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
            max_position_embeddings=4096, sliding_window=8, layer_types=["sliding_attention", "full_attention"],
            eos_token_id=eos, **special_ids,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_use_head=False,
        ),
        mm_tokens_per_image=MM_TOKENS_PER_IMAGE,
        boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"], eos_token_id=eos, **special_ids,
    )
    save_random_model(Gemma3ForConditionalGeneration, config, processor,
                      dict(eos_token_id=eos, **special_ids), out_dir, seed)
