"""The builtin tiny Qwen2.5-VL models: files written, sizes, determinism, reload and batched generate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from rftcli import tiny_model
from rftcli.processor_compat import ensure_processor_loads_without_torchvision

EXPECTED_FILES = {
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}
PARAM_RANGE = {"tiny-qwen2.5-vl": (150_000, 400_000), "small-qwen2.5-vl": (2_000_000, 3_000_000)}
PROMPT = "How many red squares are in the image?"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("builtin")
    return {name: tiny_model.build(name, root / name) for name in tiny_model.builtin_names()}


@pytest.fixture
def one_thread():
    # On a 2-core machine with another busy process, torch's default 2 threads made generate ~50x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _load(folder: Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    ensure_processor_loads_without_torchvision()
    return AutoModelForImageTextToText.from_pretrained(folder), AutoProcessor.from_pretrained(folder)


def _safetensors_params(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_names_and_spec_prefix():
    from rftcli.families import FAMILIES

    assert tiny_model.builtin_names() == ["tiny-qwen2.5-vl", "small-qwen2.5-vl", *FAMILIES]
    assert {"tiny-gemma3", "tiny-smolvlm2"} <= set(FAMILIES)
    assert tiny_model.is_builtin("builtin:tiny-qwen2.5-vl")
    assert not tiny_model.is_builtin("tiny-qwen2.5-vl")
    assert not tiny_model.is_builtin("Qwen/Qwen2.5-VL-3B-Instruct")


def test_unknown_name_lists_known_names(tmp_path):
    with pytest.raises(ValueError, match="tiny-qwen2.5-vl, small-qwen2.5-vl") as err:
        tiny_model.build("builtin:huge-qwen", tmp_path / "m")
    assert "builtin:huge-qwen" in str(err.value)
    assert not (tmp_path / "m").exists()


def test_refuses_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        tiny_model.build("tiny-qwen2.5-vl", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_builds_into_existing_empty_folder_with_prefixed_spec(tmp_path):
    out = tiny_model.build("builtin:tiny-qwen2.5-vl", tmp_path / "empty")  # created missing first
    assert out == tmp_path / "empty"
    (tmp_path / "empty2").mkdir()
    assert tiny_model.build("builtin:tiny-qwen2.5-vl", str(tmp_path / "empty2")) == tmp_path / "empty2"
    assert {p.name for p in (tmp_path / "empty2").iterdir()} == EXPECTED_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "empty2"]  # no temp folders left


@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "small-qwen2.5-vl"])
def test_files_sizes_and_config(built, name):
    folder = built[name]
    assert {p.name for p in folder.iterdir()} == EXPECTED_FILES

    weights = _safetensors_params(folder)
    n_params = sum(t.numel() for t in weights.values())
    low, high = PARAM_RANGE[name]
    assert low <= n_params <= high, n_params
    assert {t.dtype for t in weights.values()} == {torch.float32}
    # transformers 5 saves the Hub checkpoint layout ("visual.", "model.layers."), not its in-memory
    # module names ("model.visual.", "model.language_model.layers.").
    assert {key.split(".")[0] for key in weights} == {"visual", "model", "lm_head"}
    assert sum(key.startswith("visual.blocks.") for key in weights) > 0

    size = tiny_model.SIZES[name]
    config = json.loads((folder / "config.json").read_text())
    text, vision = config["text_config"], config["vision_config"]
    assert config["model_type"] == "qwen2_5_vl"
    assert config["dtype"] == "float32"
    assert text["hidden_size"] == size.text_hidden == vision["out_hidden_size"]
    assert sum(text["rope_parameters"]["mrope_section"]) == size.text_hidden // size.text_heads // 2
    assert vision["depth"] == size.vision_depth and vision["hidden_size"] == size.vision_hidden

    vocab = json.loads((folder / "tokenizer.json").read_text())
    token_id = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    assert text["vocab_size"] == tiny_model.VOCAB_SIZE == max(token_id.values()) + 1
    assert config["image_token_id"] == token_id["<|image_pad|>"]
    assert config["video_token_id"] == token_id["<|video_pad|>"]
    assert config["vision_start_token_id"] == token_id["<|vision_start|>"]
    assert config["vision_end_token_id"] == token_id["<|vision_end|>"]
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == text["eos_token_id"] == token_id["<|im_end|>"]
    assert generation["pad_token_id"] == text["pad_token_id"] == token_id["<|endoftext|>"]


def test_two_builds_are_byte_identical_across_processes(built, tmp_path):
    # A second build in a fresh process: hash seeds, thread pools and RNG state all differ there.
    code = f"from rftcli import tiny_model; tiny_model.build('tiny-qwen2.5-vl', {str(tmp_path / 'again')!r})"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    for name in EXPECTED_FILES:
        assert (tmp_path / "again" / name).read_bytes() == (built["tiny-qwen2.5-vl"] / name).read_bytes(), name


def test_seed_changes_weights_only(built, tmp_path):
    other = tiny_model.build("tiny-qwen2.5-vl", tmp_path / "seed1", seed=1)
    first = built["tiny-qwen2.5-vl"]
    assert (other / "tokenizer.json").read_bytes() == (first / "tokenizer.json").read_bytes()
    a, b = _safetensors_params(first), _safetensors_params(other)
    assert a.keys() == b.keys()
    assert not torch.equal(a["lm_head.weight"], b["lm_head.weight"])


def test_build_leaves_caller_rng_alone(tmp_path):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    tiny_model.build("tiny-qwen2.5-vl", tmp_path / "m", seed=99)
    assert torch.equal(torch.rand(3), expected)


def test_tokenizer_tokens(built):
    from trl.chat_template_utils import qwen2_5_vl_chat_template

    _, processor = _load(built["tiny-qwen2.5-vl"])
    tok = processor.tokenizer
    assert processor.chat_template == qwen2_5_vl_chat_template  # exact string, so TRL recognises it
    assert tok.chat_template == qwen2_5_vl_chat_template
    assert tok.convert_ids_to_tokens(list(range(14))) == list(tiny_model.QWEN_SPECIAL_TOKENS)
    assert (tok.eos_token, tok.pad_token, tok.padding_side) == ("<|im_end|>", "<|endoftext|>", "left")
    assert len(tok) == tiny_model.VOCAB_SIZE

    reasoning_ids = [tok.convert_tokens_to_ids(t) for t in tiny_model.REASONING_TOKENS]
    assert reasoning_ids == [1020, 1021, 1022, 1023]
    for token, token_id in zip(tiny_model.REASONING_TOKENS, reasoning_ids, strict=True):
        assert tok(token, add_special_tokens=False).input_ids == [token_id]
    text = "<think>I see 3 red squares.</think><answer>3</answer>"
    ids = tok(text, add_special_tokens=False).input_ids
    assert [i for i in ids if i in reasoning_ids] == reasoning_ids
    assert tok.decode(ids, skip_special_tokens=True) == text  # reward parsing needs the tags kept

    assert tok.tokenize(PROMPT) == ["How", "Ġmany", "Ġred", "Ġsquares", "Ġare", "Ġin", "Ġthe", "Ġimage", "?"]
    assert len(tok.tokenize("You are a helpful assistant.")) <= 6
    assert tok.tokenize("There are 7 red squares.") == ["There", "Ġare", "Ġ", "7", "Ġred", "Ġsquares", "."]
    for role in ("system", "user", "assistant"):
        assert tok.tokenize(role) == [role]


@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "small-qwen2.5-vl"])
def test_reload_and_batched_generate(built, name, one_thread):
    model, processor = _load(built[name])
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert model.dtype == torch.float32

    questions = [PROMPT, "Count."]  # different lengths, so the second row is left-padded
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for q in questions
    ]
    assert texts[0].endswith(f"<|vision_start|><|image_pad|><|vision_end|>{PROMPT}<|im_end|>\n<|im_start|>assistant\n")
    images = [Image.new("RGB", (56, 56), (255, 0, 0)), Image.new("RGB", (56, 56), (0, 0, 255))]
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    tok = processor.tokenizer
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]]
    assert (batch["input_ids"] == model.config.image_token_id).sum(dim=1).tolist() == [4, 4]  # 2x2 merged
    pad = tok.pad_token_id
    assert batch["input_ids"][1, 0] == pad and batch["attention_mask"][1, 0] == 0
    assert batch["input_ids"][0, 0] != pad
    assert batch["input_ids"][:, -1].tolist() == [tok.convert_tokens_to_ids("Ċ")] * 2  # "\n" byte token

    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    prompt_len = batch["input_ids"].shape[1]
    assert out.shape == (2, prompt_len + 6)
    assert torch.equal(out[:, :prompt_len], batch["input_ids"])
    new = out[:, prompt_len:]
    assert int(new.min()) >= 0 and int(new.max()) < tiny_model.VOCAB_SIZE
    # Same text, different images: the image must reach the (random) model's output.
    same_text = processor(text=[texts[0]] * 2, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**same_text).logits[:, -1]  # [2, vocab]
    assert not torch.allclose(logits[0], logits[1])


def test_processor_compat_is_idempotent():
    from transformers import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin
    from transformers.utils import is_torchvision_available

    ensure_processor_loads_without_torchvision()
    first = ProcessorMixin.__dict__["get_attributes"]
    ensure_processor_loads_without_torchvision()
    assert ProcessorMixin.__dict__["get_attributes"] is first
    attributes = Qwen2_5_VLProcessor.get_attributes()
    if is_torchvision_available():
        assert attributes == ["image_processor", "tokenizer", "video_processor"]
    else:
        assert attributes == ["image_processor", "tokenizer"]
