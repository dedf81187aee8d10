"""Build small Qwen2.5-VL-architecture models offline, for tests and CPU demos.

`build("builtin:tiny-qwen2.5-vl", out_dir)` writes a folder that loads like a Hub checkpoint with
`AutoModelForImageTextToText.from_pretrained` and `AutoProcessor.from_pretrained`: model weights
(safetensors, float32), config, generation config, tokenizer, image processor and TRL's exact
Qwen2.5-VL chat template. Nothing is downloaded; everything is made in-process from fixed inputs.

- "tiny-qwen2.5-vl" (~0.3M params) is for unit tests: every code path of the real architecture
  (vision tower, patch merger, M-RoPE, window attention) at a size that runs in milliseconds.
- "small-qwen2.5-vl" (~2.4M params) is sized like the 2.2M model that learned to count red squares
  in 56x56 images with a few minutes of SFT on a CPU, so demos can show a model that learns.

Where it departs from the real Qwen2.5-VL: the tokenizer is a ~1k-token byte-level BPE trained here
on synthetic English (real: 151k tokens), so special tokens sit at ids 0-13 instead of 151643+;
the weights are random. The tokenizer is the same for every size and seed; `seed` only changes the
model's initial weights. Two builds of one size with the same seed are byte-identical.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from rftcli.atomic import atomic_output, remove_stale_temporaries
from rftcli.processor_compat import ensure_processor_loads_without_torchvision

BUILTIN_PREFIX = "builtin:"

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip
# Ordinary (non-special) added tokens: never split, and kept by decode(skip_special_tokens=True),
# which reward functions rely on when they parse <think>/<answer>.
REASONING_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
VOCAB_SIZE = 1024  # BPE vocabulary (specials + 256 bytes + merges) plus REASONING_TOKENS
_CORPUS_SEED = 20251128  # fixed: the tokenizer must not change with the model seed


@dataclass(frozen=True)
class TinyQwenSize:
    """Architecture sizes of one builtin model."""

    text_hidden: int
    """Text decoder width; also the vision merger's output width."""
    text_layers: int
    """Number of text decoder layers."""
    text_heads: int
    """Query heads per text layer."""
    text_kv_heads: int
    """Key/value heads per text layer (grouped-query attention)."""
    text_intermediate: int
    """Text MLP width."""
    vision_hidden: int
    """Vision tower width."""
    vision_depth: int
    """Number of vision blocks; the last one uses full attention, the rest window attention."""
    vision_heads: int
    """Attention heads per vision block."""
    vision_intermediate: int
    """Vision MLP width."""
    max_pixels: int
    """Largest image area after resizing; bigger images are scaled down (fewer image tokens)."""
    min_pixels: int = 56 * 56
    """Smallest image area after resizing: a 56x56 image is 4x4 patches of 14 px = 4 image tokens."""

    def __post_init__(self) -> None:
        if self.text_hidden % self.text_heads or self.text_heads % self.text_kv_heads:
            raise ValueError(f"text_hidden/text_heads/text_kv_heads do not divide: {self}")
        if (self.text_hidden // self.text_heads) % 8:
            raise ValueError(f"text head_dim must be a multiple of 8 (M-RoPE needs 3 sections): {self}")
        if self.vision_hidden % self.vision_heads:
            raise ValueError(f"vision_hidden must be divisible by vision_heads: {self}")

    @property
    def mrope_section(self) -> list[int]:
        """Temporal/height/width rotary split; sums to head_dim / 2 in Qwen's 1:1.5:1.5 ratio."""
        half = self.text_hidden // self.text_heads // 2
        temporal = half // 4
        height = (half - temporal) // 2
        return [temporal, height, half - temporal - height]


SIZES: dict[str, TinyQwenSize] = {
    "tiny-qwen2.5-vl": TinyQwenSize(
        text_hidden=64, text_layers=2, text_heads=4, text_kv_heads=2, text_intermediate=128,
        vision_hidden=32, vision_depth=2, vision_heads=2, vision_intermediate=64,
        max_pixels=112 * 112,
    ),
    "small-qwen2.5-vl": TinyQwenSize(
        text_hidden=128, text_layers=4, text_heads=4, text_kv_heads=2, text_intermediate=512,
        vision_hidden=128, vision_depth=4, vision_heads=4, vision_intermediate=256,
        max_pixels=224 * 224,
    ),
}  # fmt: skip


def builtin_names() -> list[str]:
    """Names accepted by `build`, without the "builtin:" prefix."""
    from rftcli.families import FAMILIES

    return [*SIZES, *FAMILIES]


def is_builtin(spec: str) -> bool:
    """True for a model spec such as "builtin:tiny-qwen2.5-vl" (as opposed to a path or Hub id)."""
    return spec.startswith(BUILTIN_PREFIX)


def build(spec_or_name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build a builtin model, its tokenizer and processor, and save them all into `out_dir`.

    `spec_or_name` is "builtin:<name>" or "<name>". `out_dir` is created if missing and must be
    an empty folder if it exists. `seed` sets the model's initial weights only. Returns `out_dir`.
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from trl.chat_template_utils import qwen2_5_vl_chat_template

    from rftcli.families import FAMILIES, build_family

    name = spec_or_name.removeprefix(BUILTIN_PREFIX)
    if name not in SIZES and name not in FAMILIES:
        raise ValueError(f"unknown builtin model {spec_or_name!r}; known: {', '.join(builtin_names())}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not an empty folder")
    if name in FAMILIES:
        remove_stale_temporaries(out)
        with atomic_output(out, overwrite=out.exists(), directory=True) as tmp:
            build_family(name, Path(tmp), seed)
        return out
    size = SIZES[name]

    ensure_processor_loads_without_torchvision()
    tokenizer = _build_tokenizer()
    tokenizer.chat_template = qwen2_5_vl_chat_template
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=14, temporal_patch_size=2, merge_size=2,
        min_pixels=size.min_pixels, max_pixels=size.max_pixels,
    )  # fmt: skip
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=qwen2_5_vl_chat_template
    )

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    special_ids = dict(
        bos_token_id=ids["<|endoftext|>"],  # as in Qwen's own config; the tokenizer adds no BOS
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=size.text_hidden,
            intermediate_size=size.text_intermediate,
            num_hidden_layers=size.text_layers,
            num_attention_heads=size.text_heads,
            num_key_value_heads=size.text_kv_heads,
            max_position_embeddings=4096,
            max_window_layers=size.text_layers,
            rope_parameters=dict(rope_type="default", rope_theta=1_000_000.0, mrope_section=size.mrope_section),
            **special_ids,
        ),
        vision_config=dict(
            depth=size.vision_depth,
            hidden_size=size.vision_hidden,
            intermediate_size=size.vision_intermediate,
            num_heads=size.vision_heads,
            out_hidden_size=size.text_hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,  # pixels: 112 / 14 / 2 = 4x4 merged tokens per window, as in Qwen
            fullatt_block_indexes=[size.vision_depth - 1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    model.generation_config = GenerationConfig(**special_ids)

    # Written under a temporary name and renamed, so a killed build leaves no half-written model (and the
    # temporary of an earlier killed build is removed first).
    remove_stale_temporaries(out)
    with atomic_output(out, overwrite=out.exists(), directory=True) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return out


def _build_tokenizer():
    """Train the byte-level BPE on the synthetic corpus and wrap it as a `Qwen2Tokenizer`."""
    return build_tokenizer()


def build_tokenizer(special_tokens: tuple[str, ...] = QWEN_SPECIAL_TOKENS, eos_token: str = "<|im_end|>",
                    pad_token: str = "<|endoftext|>", bos_token: str | None = None, tokenizer_class=None):
    """Train the byte-level BPE on the synthetic corpus with `special_tokens` first (ids 0..n-1, in order) and
    wrap it as `tokenizer_class` (default `Qwen2Tokenizer`; another class must take vocab and merges the same
    way), with REASONING_TOKENS added as ordinary tokens. The same inputs give the same tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import AddedToken
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    # Same normalizer and pre-tokenizer as Qwen2Tokenizer: it rebuilds this pipeline around the
    # saved vocab/merges on load, so training with anything else would tokenize differently.
    bpe = Tokenizer(BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(REASONING_TOKENS),
        special_tokens=list(special_tokens),  # ids 0..n-1, in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer)
    model_json = json.loads(bpe.to_str())["model"]

    tokenizer = (tokenizer_class or Qwen2Tokenizer)(
        vocab=model_json["vocab"],
        merges=[tuple(merge) for merge in model_json["merges"]],
        unk_token=None,
        eos_token=eos_token,
        pad_token=pad_token,
        **({"bos_token": bos_token} if bos_token else {}),
        extra_special_tokens=list(special_tokens),
        padding_side="left",
        model_max_length=4096,
    )
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in REASONING_TOKENS])
    return tokenizer


# The synthetic corpus. Task strings are repeated so they become few tokens each; the word salad
# fills the vocabulary to ~1k with ordinary English. Changing any of this changes every token id.
_TASK_SENTENCES = (
    "You are a helpful assistant.",
    "How many red squares are in the image?",
    "Think step by step inside <think> </think> tags, then give the final answer inside <answer> </answer> tags.",
    "system", "user", "assistant",
)  # fmt: skip
_COLORS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "gray", "pink")
_SHAPES = {"square": "squares", "circle": "circles", "triangle": "triangles", "box": "boxes",
           "star": "stars", "line": "lines", "dot": "dots", "object": "objects"}  # fmt: skip
_PLACES = ("left", "right", "top", "bottom", "middle", "center", "corner", "edge")
_COMPARE = ("larger", "smaller", "bigger", "taller", "shorter", "wider", "closer", "brighter")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_TEMPLATES = (
    "How many {many} are in the image?",
    "What is the sum of {a} and {b}? The sum is {total}.",
    "Which {one} is {compare}, the left one or the right one?",
    "The {one} on the {place} is {compare} than the one on the other side.",
    "Count the {many} in the image and give the answer.",
    "The answer is {a}. The final answer is {word}.",
    "Draw a box around the {one} at the {place} of the picture.",
    "There is one {one} near the {place} edge, and {digit} {many}.",
    "First I count the {many}: there are {digit}. Then I add {b}.",
    "what is the number of {many}? which one is {compare}? is it {a}?",
    "Let me think. The image shows {word} {many}.",
)
_COMMON_WORDS = (
    "about above across after again against all also always among and another answer any around ask "
    "back because become before begin behind being below best better between both bring but call can "
    "change check choose close color come compare could count cover different does done down each "
    "early easy either else enough even every example fact far feel few find first follow form found "
    "from full give good great group half hand have help here high hold however idea important into "
    "keep kind know large last later least leave less light like little long look make many mark "
    "matter maybe mean might more most move much must name near need never next note nothing now "
    "number often only open order other over part pattern picture place point possible question quite "
    "rather read ready real reason result right round same say second seem set shape should show side "
    "simple since size small some something sort space start still such sure take tell than that "
    "their them then there these they thing think this those though three through time together total "
    "toward true try turn under until upon very want watch well were what when where whether which "
    "while white whole why will with within without word work would write yes yet your"
).split()


def _corpus() -> list[str]:
    """Fixed synthetic English: task strings, counting answers, numbers, templates, word salad."""
    rng = random.Random(_CORPUS_SEED)
    lines = list(_TASK_SENTENCES) * 40
    for n in range(10):
        lines += [f"I see {n} red squares.", f"There are {n} red squares.", f" {n} "] * 20
    lines += [str(n) for n in range(1001)]
    for _ in range(3000):
        words = [rng.choice(_COMMON_WORDS) for _ in range(rng.randint(5, 12))]
        lines.append(" ".join(words).capitalize() + rng.choice(".?!,"))
    for _ in range(4000):
        shape = rng.choice(list(_SHAPES))
        a, b = rng.randint(0, 1000), rng.randint(0, 1000)
        fields = dict(
            one=f"{rng.choice(_COLORS)} {shape}",
            many=f"{rng.choice(_COLORS)} {_SHAPES[shape]}",
            place=rng.choice(_PLACES),
            compare=rng.choice(_COMPARE),
            word=rng.choice(_NUMBER_WORDS),
            digit=rng.randint(0, 9),
            a=a,
            b=b,
            total=a + b,
        )
        lines.append(rng.choice(_TEMPLATES).format(**fields))
    return lines
