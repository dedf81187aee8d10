"""Cells a family runs only on prompts of one image (`Row.one_image` in rftcli.families.support): such a run is
refused before any weights load, naming the file, the row and the column; one-image prompts and other families
are not refused."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from rftcli.families.support import SUPPORT, refuse_several_images
from rftcli.schema import read_table, write_table
from rftcli.stages import train_grpo


def _png(color: str) -> dict:
    buf = io.BytesIO()
    Image.new("RGB", (56, 56), color).save(buf, "PNG")
    return {"bytes": buf.getvalue(), "path": None}


@pytest.fixture(scope="module")
def two_images(tmp_path_factory, dataset):
    """The counting set with its third train row holding two images."""
    art = read_table(dataset, "dataset")
    rows = art.table.to_pylist()
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    rows[train[2]]["images"] = [_png("red"), _png("blue")]
    out = tmp_path_factory.mktemp("two") / "two.parquet"
    write_table(out, "dataset", rows, art.manifest)
    return out, train[2], rows[train[2]]["id"]


def test_online_grpo_on_llava_onevision_refuses_a_prompt_of_two_images(tmp_path, two_images):
    path, position, row_id = two_images
    reason = SUPPORT["tiny-llava-onevision"].one_image["grpo-online"]
    out = tmp_path / "grpo"
    with pytest.raises(ValueError) as err:
        train_grpo.run(train_grpo.Config(dataset=path, model="builtin:tiny-llava-onevision", out=out, max_steps=1,
                                         batch_size=4, num_generations=2))
    assert str(err.value) == (f"{path}: row {position}, column 'images' (id {row_id!r}): 2 images, and grpo-online "
                              f"runs llava_onevision models on prompts of one image only on this stack: {reason}")
    assert not out.exists()


def test_one_image_prompts_and_other_families_pass(two_images):
    path, _, _ = two_images
    rows = read_table(path, "dataset").table.to_pylist()
    one = [r for r in rows if len(r["images"]) == 1]
    refuse_several_images("grpo-online", "builtin:tiny-llava-onevision", one, path, {})
    refuse_several_images("grpo-offline", "builtin:tiny-llava-onevision", rows, path, {})
    refuse_several_images("grpo-online", "builtin:tiny-internvl", rows, path, {})
