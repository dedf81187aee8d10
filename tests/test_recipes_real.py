"""recipes/geo3k, recipes/clevr-count and recipes/refcoco end to end through real `make` and the installed
`rftcli`, on the built-in tiny model and a few rows written here in each publisher's layout:

    geo3k        hiyouga/geometry3k: data/{train,validation,test}-00000-of-00001.parquet, images (a list of
                 image structs), problem with "<image>", answer
    clevr-count  leonardPKU/clevr_cogen_a_train: data/train-00000-of-00001.parquet, image, problem, solution
                 "<answer> 3 </answer>"; a Super-CLEVR counting set in the same layout for eval
    refcoco      VLM-R1's rec JSONL (image path under the COCO folder, problem, normal_caption, solution
                 [x1, y1, x2, y2] in pixels) for train and val, LISA-Grounding's JSON for out of domain

The three run at once (the machine's cores are used in parallel), each under another memory tier, with
tiny step counts given as Make variables. Checked: each stage's artifact and what it records (the model,
the tier's settings, the layout's splits, evaluation rows that repeat a training row dropped), the eval
summary (base against trained; clevr-count under both prompt variants, refcoco on both sets), and that
Make re-runs only what a changed setting makes stale.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rftcli.manifest import read_checkpoint_manifest
from rftcli.schema import read_table

ROOT = Path(__file__).resolve().parent.parent
TINY = "builtin:tiny-qwen2.5-vl"
SHORT = [f"MODEL={TINY}", "STEPS=2", "LIMIT=4", "GROUP=2", "BATCH=4", "ACCUM=1", "COMPLETION=8", "EVAL_BATCH=4"]
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")]


def png(i: int, fmt: str = "PNG") -> bytes:
    """A 56x56 image (4 x 4 patches of the tiny model) with a square whose colour varies with i."""
    img = Image.new("RGB", (56, 56), (240, 240, 240))
    img.paste((40 * (i % 6), 120, 200 - 20 * (i % 8)), (14, 14, 42, 42))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_geometry3k(folder: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    schema = pa.schema([("images", pa.list_(IMAGE)), ("problem", pa.string()), ("answer", pa.string())])
    for split, n in (("train", 6), ("validation", 2), ("test", 4)):
        rows = [{"images": [{"bytes": png(i + 10 * len(split)), "path": None}],
                 "problem": f"<image>Find x in the {split} figure {i}. Round to the nearest tenth.",
                 "answer": f"{i + 2}.5"} for i in range(n)]
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "data" / f"{split}-00000-of-00001.parquet")
    return folder


def write_counting(folder: Path, split: str, n: int, repeat: dict | None = None) -> Path:
    """R1-V's layout; `repeat` adds one row equal to a training row (eval must drop it)."""
    (folder / "data").mkdir(parents=True)
    rows = [{"image": {"bytes": png(i + (0 if split == "train" else 50)), "path": None},
             "problem": f"How many items are there in the image? ({split} {i})",
             "solution": f"<answer> {i % 5 + 1} </answer>"} for i in range(n)]
    rows += [repeat] if repeat else []
    schema = pa.schema([("image", IMAGE), ("problem", pa.string()), ("solution", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "data" / f"{split}-00000-of-00001.parquet")
    return folder


def write_rec(path: Path, images: Path, prefix: str, n: int, jsonl: bool, repeat: dict | None = None) -> list[dict]:
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"{prefix}_{i:012d}.jpg"
        (images / name).write_bytes(png(i + 3 * len(prefix), "JPEG"))
        relative = f"{images.name}/{name}" if images.name == "train2014" else name
        caption = f"the square of {prefix} image {i}"
        rows.append({"image": relative, "problem": f"Please provide the bounding box of: {caption}.",
                     "normal_caption": caption, "solution": [14.0 + i % 3, 14.0, 42.0, 42.0 - i % 2]})
    rows += [repeat] if repeat else []
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) if jsonl else json.dumps(rows))
    return rows


def _make(recipe: Path, args: list[str], **kw) -> subprocess.CompletedProcess | subprocess.Popen:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = ["make", "-C", str(recipe), *SHORT, *args]
    if kw.get("background"):
        log = (recipe.parent / f"{recipe.name}.log").open("w")
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, list[str], str]]:
    """Each recipe copied, given its data and run once; name -> (recipe folder, make arguments, log)."""
    root = tmp_path_factory.mktemp("recipes")
    data = root / "data"
    geo = write_geometry3k(data / "geometry3k")
    clevr = write_counting(data / "clevr_cogen_a_train", "train", 6)
    first = pq.read_table(clevr / "data" / "train-00000-of-00001.parquet").to_pylist()[0]
    superclevr = write_counting(data / "superclevr", "test", 4, repeat=first)
    rec = data / "rec_jsons_processed"
    rec.mkdir(parents=True)
    train = write_rec(rec / "refcoco_train.jsonl", data / "coco" / "train2014", "COCO_train2014", 6, jsonl=True)
    write_rec(rec / "refcoco_val.jsonl", data / "coco" / "train2014", "COCO_val", 3, jsonl=True, repeat=train[0])
    write_rec(rec / "lisa_test.json", data / "lisa_test", "lisa", 3, jsonl=False)
    args = {
        "geo3k": ["MEM=24", f"DATA={geo}"],
        "clevr-count": ["MEM=12", f"DATA={clevr}", f"DATA_TEST={superclevr}"],
        "refcoco": ["MEM=16", f"DATA={rec / 'refcoco_train.jsonl'}", f"IMAGE_ROOT={data / 'coco'}",
                    f"DATA_VAL={rec / 'refcoco_val.jsonl'}", f"DATA_OOD={rec / 'lisa_test.json'}",
                    f"IMAGE_ROOT_OOD={data / 'lisa_test'}"],
    }
    procs = {}
    for name, extra in args.items():
        shutil.copytree(ROOT / "recipes" / name, root / name)
        procs[name] = _make(root / name, extra, background=True)
    out = {}
    for name, proc in procs.items():
        proc.wait(timeout=600)
        log = (root / f"{name}.log").read_text()
        assert proc.returncode == 0, f"{name}:\n{log[-4000:]}"
        out[name] = (root / name, args[name], log)
    return out


def _summary(recipe: Path) -> dict:
    return json.loads((recipe / "out" / "eval" / "summary.json").read_text())


def _splits(path: Path) -> dict[str, int]:
    table = read_table(path, "dataset").table
    splits = table["split"].to_pylist()
    return {s: splits.count(s) for s in sorted(set(splits))}


def _trained(recipe: Path, model: str = TINY) -> dict:
    grpo = read_checkpoint_manifest(recipe / "out" / "grpo")
    assert grpo["base_model"] == model and grpo["mode"] == "online"
    assert (grpo["config"]["max_steps"], grpo["config"]["num_generations"], grpo["config"]["limit"]) == (2, 2, 4)
    assert read_checkpoint_manifest(recipe / "out" / "merged")["merged_from"]["adapter"] == "out/grpo"
    return grpo["config"]


def test_geo3k_recipe(runs):
    recipe, args, log = runs["geo3k"]
    out = recipe / "out"
    assert _splits(out / "data.parquet") == {"test": 4, "train": 6, "val": 2}  # the layout's own splits
    config = _trained(recipe)
    assert (config["load_in_4bit"], config["max_pixels"], config["beta"], config["learning_rate"]) == (
        False, 401408, 0.01, 1e-5)  # MEM=24 and grpo.yaml
    summary = _summary(recipe)
    assert list(summary["models"]) == ["base", "grpo"]
    assert (summary["manifest"]["config"]["preset"], summary["manifest"]["config"]["split"]) == ("geometry3k", "test")
    results = read_table(out / "eval" / "results.parquet", "eval").table
    assert results.num_rows == 2 * 4  # two models x the four test problems
    assert "accuracy" in log

    assert "rftcli" not in _make(recipe, args).stdout  # nothing is stale
    stale = _make(recipe, [*args, "MEM=12", "-n"]).stdout  # another tier: train, merge, eval again
    for stage in ("train-grpo", "merge", "eval"):
        assert f"rftcli {stage}" in stale
    assert "rftcli prepare-data" not in stale and "--load-in-4bit" in stale
    assert "rftcli" not in _make(recipe, ["-n", *args]).stdout  # the dry run changed nothing


def test_clevr_count_recipe(runs):
    recipe, args, _ = runs["clevr-count"]
    out = recipe / "out"
    train = read_table(out / "train.parquet", "dataset").table
    assert _splits(out / "train.parquet") == {"train": 6}
    assert train["answer"].to_pylist() == ["1", "2", "3", "4", "5", "1"]  # from "<answer> N </answer>"
    test = read_table(out / "test.parquet", "dataset").table
    assert test.num_rows == 4  # the row repeating a training row is dropped
    config = _trained(recipe)
    assert (config["load_in_4bit"], config["max_pixels"], config["gradient_checkpointing"]) == (True, 200704, True)
    summary = _summary(recipe)
    assert list(summary["models"]) == ["base", "grpo"]
    assert summary["manifest"]["config"]["preset"] == "clevr-count"
    assert summary["manifest"]["config"]["prompts"] == ["dataset", "direct"]
    cells = {(c["model"], c["prompt"]) for c in summary["grid"]}
    assert cells == {(m, p) for m in ("base", "grpo") for p in ("dataset", "direct")}
    assert "rftcli" not in _make(recipe, args).stdout


def test_refcoco_recipe(runs):
    recipe, args, _ = runs["refcoco"]
    out = recipe / "out"
    train = read_table(out / "train.parquet", "dataset").table
    assert set(train["answer_type"].to_pylist()) == {"box"} and train.num_rows == 6
    assert read_table(out / "val.parquet", "dataset").table.num_rows == 3  # the repeated training row dropped
    assert read_table(out / "ood.parquet", "dataset").table.num_rows == 3
    config = _trained(recipe)
    assert (config["load_in_4bit"], config["max_pixels"], config["rewards"]) == (True, 401408, ["iou=1", "format=0.1"])
    summary = _summary(recipe)
    assert list(summary["models"]) == ["base", "grpo"] and summary["manifest"]["config"]["preset"] == "refcoco"
    cells = {(c["model"], c["set"]) for c in summary["grid"]}
    assert cells == {(m, s) for m in ("base", "grpo") for s in ("refcoco-val", "ood")}
    assert "rftcli" not in _make(recipe, args).stdout
