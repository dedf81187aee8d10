"""Prompts of the Gemma 3 and SmolVLM2 built-ins: what the model sees, and which tokens are never sampled."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from rftcli.generation import encode_prompts, placeholder_ids
from rftcli.loading import load_processor


def _image() -> dict:
    buf = io.BytesIO()
    Image.new("RGB", (56, 56), (200, 0, 0)).save(buf, format="PNG")
    return {"bytes": buf.getvalue()}


ROWS = [{"id": "a", "prompt": "How many red squares are in the image?", "images": [_image()]},
        {"id": "b", "prompt": "Count them.", "images": [_image(), _image()]}]


@pytest.mark.parametrize(("model", "slot", "first"), [("builtin:tiny-gemma3", "<image_soft_token>", "<bos>"),
                                                       ("builtin:tiny-smolvlm2", "<image>", "<|im_start|>")])
def test_each_prompt_gets_its_own_images_and_one_start_token(model, slot, first):
    processor = load_processor(model)
    enc = encode_prompts(processor, ROWS, "cpu")
    slot_id = processor.tokenizer.convert_tokens_to_ids(slot)
    first_id = processor.tokenizer.convert_tokens_to_ids(first)
    per_row = (enc["input_ids"] == slot_id).sum(dim=1).tolist()
    assert per_row == [4, 8]  # 4 image tokens per 56x56 image, each prompt its own images
    assert (enc["input_ids"] == first_id).sum(dim=1).tolist() == [1, 1]  # the template's, not a second one


def test_gemma3_never_samples_its_image_slot():
    processor = load_processor("builtin:tiny-gemma3")
    banned = processor.tokenizer.convert_ids_to_tokens(placeholder_ids(processor))
    assert "<image_soft_token>" in banned  # the processor's own image_token is <start_of_image>


def test_a_smolvlm2_folder_loads_with_idefics3s_processor_where_smolvlms_cannot_run(tmp_path):
    """A folder as SmolVLM2 checkpoints have it (SmolVLMProcessor, SmolVLMImageProcessor): without torchvision
    or num2words, SmolVLMProcessor cannot prompt; rftcli loads Idefics3Processor from the folder instead, which
    gives the same tokens and pixels."""
    import importlib.util
    import json
    import shutil

    from transformers.utils import is_torchvision_available

    from rftcli import loading

    builtin = loading.load_processor("builtin:tiny-smolvlm2")
    folder = tmp_path / "smolvlm2"
    shutil.copytree(loading.resolve("builtin:tiny-smolvlm2"), folder)
    config = json.loads((folder / "processor_config.json").read_text())
    config["processor_class"] = "SmolVLMProcessor"
    config["image_processor"]["image_processor_type"] = "SmolVLMImageProcessor"
    (folder / "processor_config.json").write_text(json.dumps(config))
    if is_torchvision_available() and importlib.util.find_spec("num2words"):
        pytest.skip("SmolVLMProcessor runs here; rftcli loads it as it is")
    processor = loading.load_processor(str(folder))
    assert type(processor).__name__ == "Idefics3Processor"
    assert type(processor.image_processor).__name__.startswith("SmolVLMImageProcessor")
    ours, theirs = encode_prompts(processor, ROWS, "cpu"), encode_prompts(builtin, ROWS, "cpu")
    assert ours.keys() == theirs.keys()
    assert all((ours[k] == theirs[k]).all() for k in ours)


@pytest.mark.parametrize("model", ["builtin:tiny-gemma3", "builtin:tiny-smolvlm2"])
def test_repeating_encoded_prompts_equals_encoding_them_repeated(model):
    from rftcli.generation import repeat_encoded

    processor = load_processor(model)
    repeated = repeat_encoded(encode_prompts(processor, ROWS, "cpu"), ROWS, 3)
    assert repeated is not None  # no second pass through the image processor
    again = encode_prompts(processor, [r for r in ROWS for _ in range(3)], "cpu")
    assert repeated.keys() == again.keys()
    assert all(torch.equal(repeated[k], again[k]) for k in again)
