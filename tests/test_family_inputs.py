"""Processor outputs of the non-Qwen families through rftcli's encoding shortcuts: rollout's CPU path repeats a
prompt's encoding n times without a second pass through the image processor, and must equal encoding each row
n times (LLaVA-OneVision's per-row `batch_num_images` and per-image `image_sizes`), or decline (InternVL's tiles).
"""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from rftcli.generation import encode_prompts, repeat_encoded
from rftcli.schema import read_table


def _png(size: tuple[int, int]) -> dict:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return {"bytes": buf.getvalue(), "path": None}


@pytest.fixture(scope="module")
def rows(dataset):
    rows = read_table(dataset, "dataset").table.slice(0, 3).to_pylist()
    rows[1] = {**rows[1], "images": [_png((112, 56))]}  # 2:1: a grid of two tiles (and InternVL's thumbnail)
    rows[2] = {**rows[2], "images": rows[2]["images"] + [_png((40, 70))]}  # two images
    return rows


def _processor(name: str):
    from rftcli.loading import load_processor

    return load_processor(f"builtin:{name}")


def test_llava_onevision_repeated_encoding_equals_encoding_repeated_rows(rows):
    processor = _processor("tiny-llava-onevision")
    fast = repeat_encoded(encode_prompts(processor, rows, "cpu"), rows, 3)
    slow = encode_prompts(processor, [r for r in rows for _ in range(3)], "cpu")
    assert fast is not None and sorted(fast) == sorted(slow.keys())
    assert {"pixel_values", "image_sizes", "batch_num_images"} <= set(fast)
    assert slow["batch_num_images"].tolist() == [1] * 6 + [2] * 3
    for key, value in slow.items():
        assert torch.equal(fast[key], value), key


def test_internvl_tiles_are_encoded_again(rows):
    processor = _processor("tiny-internvl")
    enc = encode_prompts(processor, rows, "cpu")
    assert enc["pixel_values"].shape[0] == 1 + 3 + (1 + 3)  # tiles: one; two + thumbnail; one and two + thumbnail
    assert repeat_encoded(enc, rows, 3) is None  # tiles per row are not in the output: the caller encodes again
    one_tile = [rows[0], {**rows[2], "images": rows[2]["images"][:1] * 2}]  # square images, one tile each
    fast = repeat_encoded(encode_prompts(processor, one_tile, "cpu"), one_tile, 2)
    slow = encode_prompts(processor, [r for r in one_tile for _ in range(2)], "cpu")
    assert fast is not None and all(torch.equal(fast[k], v) for k, v in slow.items())
