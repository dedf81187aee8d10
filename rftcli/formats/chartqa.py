"""ChartQA in the layouts that name the question `query` and the answer `label`:
HuggingFaceM4/ChartQA on the Hub (image, query, label: a list of strings, human_or_machine: a class
label, 0 human / 1 machine), and the ChartQA GitHub release (train/val/test *_human.json and
*_augmented.json: imgname, query, label, images in png/ beside the file). lmms-lab/ChartQA (question,
answer, type, image) is read by the plain layout.

Mapping: prompt = query; answer = the label, a one-element list as its element; a label of several
answers keeps the first as the answer and all of them in metadata.answers. human_or_machine is
stored by name. Images: `image`, or `imgname` looked up beside the file and in png/.

Sample (one row of the HuggingFaceM4 Parquet, as JSON):
    {"image": {"bytes": "...", "path": null}, "query": "What is the value of the highest bar?", "label": ["52"],
     "human_or_machine": 0}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rftcli.formats import Context, Where
from rftcli.formats.rows import draft, image_base, image_refs, is_empty, metadata_dict, text_list

NAME = "chartqa"
_SOURCES = {0: "human", 1: "machine"}
_DROP = {"image", "images", "query", "label", "imgname", "id", "metadata"}


def detect(record: dict[str, Any]) -> bool:
    return {"query", "label"} <= record.keys()


def _imgname(name: str, base_dir: Path, ctx: Context) -> str:
    root = image_base(base_dir, ctx)
    for candidate in (Path(name), Path("png") / name):
        if (root / candidate).is_file():
            return str(candidate)
    return name


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    label = text_list(row.get("label"))
    meta = metadata_dict(row.get("metadata"), where)
    meta.update({k: v for k, v in row.items() if k not in _DROP})
    if isinstance(label, list):
        if len(label) > 1:
            meta["answers"] = [str(x) for x in label]
        label = label[0] if label else None
    if isinstance(meta.get("human_or_machine"), int):
        meta["human_or_machine"] = _SOURCES.get(meta["human_or_machine"], meta["human_or_machine"])
    images = image_refs(row.get("image")) + image_refs(row.get("images"))
    if not images and not is_empty(row.get("imgname")):
        images = [_imgname(str(row["imgname"]), base_dir, ctx)]
    return draft({"id": row.get("id")}, where, prompt=row.get("query"), answer=label, images=images,
                 task="chartqa", metadata=meta)
