"""Grounding rewards: how well the predicted bounding boxes cover the ground-truth boxes.

Boxes are `[x1, y1, x2, y2]` corners (in either order) in whatever coordinates the dataset uses:
pixels for Qwen2.5-VL, 0-1000 for Qwen2-VL. Nothing is rescaled, so prediction and ground truth must
use the same convention. `parse_boxes` reads them from
    JSON       `[10, 20, 50, 60]`, `[{"bbox_2d": [10, 20, 50, 60], "label": "cat"}]`, `{"bbox": [...]}`,
               `{"x1": 10, "y1": 20, "x2": 50, "y2": 60}` (also xmin/ymin/xmax/ymax), in a ```json fence
    text       `[10, 20, 50, 60]`, `(10, 20, 50, 60)`, `(10,20),(50,60)` (Qwen2-VL's two corners), any
               number of them; four bare numbers without brackets are not read as a box
Gemini's `box_2d` (y before x) is not read, because its order differs.

The prediction is the answer slot - the `<answer>` block, else `\\boxed{}` - as `rftcli.rewards.text`
defines it; `iou_lenient` (`make_iou(extract="any")`) also reads boxes anywhere outside `<think>`.
Predicted and ground-truth boxes are paired one to one, greedily by highest IoU, and
the score is divided by the larger of the two counts, so a missing box and an extra (hedging) box
both cost the same. A row whose `answer` holds no box abstains (None), and so does one whose answer
holds a degenerate box (no width or no height: a point or a line, which no box can overlap, so IoU would
be 0 even for an identical prediction); a prediction without a box scores 0.

    iou       mean IoU of the paired boxes, in [0, 1]
    iou_50    share of boxes paired with IoU >= 0.5 (1.0 or 0.0 for one box each)
    iou_75    the same at 0.75

Examples:
    >>> iou(["<answer>[0, 0, 10, 10]</answer>"], answer=["[0, 0, 10, 20]"])
    [0.5]
    >>> iou_50(['<answer>[{"bbox_2d": [0, 0, 10, 10], "label": "cup"}]</answer>'], answer=["[0, 0, 10, 20]"])
    [1.0]
    >>> iou_75(["<answer>[0, 0, 10, 10]</answer>", "no box here"], answer=["[0, 0, 10, 20]", "[1, 1, 2, 2]"])
    [0.0, 0.0]
    >>> iou(["<answer>[0, 0, 10, 10], [50, 50, 60, 60]</answer>"], answer=["[0, 0, 10, 10]"])
    [0.5]
    >>> iou(["<answer>3</answer>", "<answer>[5, 5, 5, 5]</answer>"], answer=["Paris", "[5, 5, 5, 5]"])
    [None, None]
    >>> iou(["box [0, 0, 10, 10]"], answer=["[0, 0, 10, 10]"]), iou_lenient(["box [0, 0, 10, 10]"], answer=["[0, 0, 10, 10]"])
    ([0.0], [1.0])
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from rftcli.rewards.text import EXTRACT_MODES, LENIENT, STRICT, completion_text, find_answer

Box = tuple[float, float, float, float]
MAX_BOXES = 100
"""A prediction with more boxes than this scores 0 (and is not matched: pairing is quadratic)."""

_N = r"[-+]?\d+(?:\.\d+)?"
_BOX_TEXT = re.compile(
    rf"\[\s*({_N})\s*,\s*({_N})\s*,\s*({_N})\s*,\s*({_N})\s*\]"  # [x1, y1, x2, y2]
    rf"|\(\s*({_N})\s*,\s*({_N})\s*,\s*({_N})\s*,\s*({_N})\s*\)"  # (x1, y1, x2, y2)
    rf"|\(\s*({_N})\s*,\s*({_N})\s*\)\s*,?\s*\(\s*({_N})\s*,\s*({_N})\s*\)")  # (x1, y1), (x2, y2)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_BOX_KEYS = ("bbox_2d", "bbox", "box")
_CORNER_KEYS = (("x1", "y1", "x2", "y2"), ("xmin", "ymin", "xmax", "ymax"), ("x_min", "y_min", "x_max", "y_max"))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _walk(obj: Any, out: list[Box]) -> None:
    if isinstance(obj, dict):
        for key in _BOX_KEYS:
            if key in obj:
                _walk(obj[key], out)
                return
        for keys in _CORNER_KEYS:
            if all(_is_number(obj.get(k)) for k in keys):
                out.append(tuple(float(obj[k]) for k in keys))
                return
    elif isinstance(obj, list):
        if len(obj) == 4 and all(_is_number(v) for v in obj):
            out.append(tuple(float(v) for v in obj))
        else:
            for item in obj:
                _walk(item, out)


def parse_boxes(text: str | None) -> list[Box]:
    """Every box in `text` (JSON or text forms, see the module docstring), in order; [] for none."""
    if not text:
        return []
    s = text.strip()
    fenced = _FENCE.search(s)
    if fenced:
        s = fenced.group(1).strip()
    if s[:1] in "[{":
        try:
            data = json.loads(s)
        except (ValueError, RecursionError):  # not JSON after all: read it as text
            pass
        else:  # JSON is read by its keys only: its numbers under other keys (box_2d) are no box
            found: list[Box] = []
            _walk(data, found)
            return found
    boxes = []
    for m in _BOX_TEXT.finditer(s):
        values = [float(v) for v in m.groups() if v is not None]
        if all(math.isfinite(v) for v in values):
            boxes.append(tuple(values))
    return boxes


def degenerate(box: Sequence[float]) -> bool:
    """No width or no height: a point or a line."""
    return box[0] == box[2] or box[1] == box[3]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (corners in either order)."""
    ax1, ax2, ay1, ay2 = min(a[0], a[2]), max(a[0], a[2]), min(a[1], a[3]), max(a[1], a[3])
    bx1, bx2, by1, by2 = min(b[0], b[2]), max(b[0], b[2]), min(b[1], b[3]), max(b[1], b[3])
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def matched_ious(pred: Sequence[Box], gold: Sequence[Box]) -> list[float]:
    """IoUs of a one-to-one pairing of predicted and gold boxes, greedily by highest IoU."""
    pairs = sorted(((box_iou(p, g), i, j) for i, p in enumerate(pred) for j, g in enumerate(gold)),
                   key=lambda t: (-t[0], t[1], t[2]))
    used_pred, used_gold, ious = set(), set(), []
    for value, i, j in pairs:
        if i not in used_pred and j not in used_gold:
            used_pred.add(i)
            used_gold.add(j)
            ious.append(value)
    return ious


def box_score(pred: Sequence[Box], gold: Sequence[Box], threshold: float | None = None) -> float:
    """Mean paired IoU (threshold None) or share of pairs with IoU >= threshold, over max(#pred, #gold)."""
    if not pred or not gold or len(pred) > MAX_BOXES:
        return 0.0
    ious = matched_ious(pred, gold)
    hits = sum(ious) if threshold is None else sum(1 for v in ious if v >= threshold)
    return hits / max(len(pred), len(gold))


def make_iou(threshold: float | None = None, extract: str = STRICT, name: str | None = None) -> Callable[..., list]:
    """A grounding reward: mean IoU (`threshold` None) or the thresholded share; `extract` is the
    answer extraction mode of `rftcli.rewards.text.find_answer`."""
    if extract not in EXTRACT_MODES:
        raise ValueError(f"unknown extraction mode {extract!r}; expected one of {', '.join(EXTRACT_MODES)}")

    def reward(completions: Sequence[Any], answer: Sequence[Any], **kwargs: Any) -> list[float | None]:
        if len(answer) != len(completions):
            raise ValueError(f"column 'answer' has {len(answer)} values for {len(completions)} completions")
        out: list[float | None] = []
        for completion, gold_text in zip(completions, answer, strict=True):
            gold = parse_boxes(None if gold_text is None else str(gold_text))
            if not gold or any(degenerate(b) for b in gold):
                out.append(None)
                continue
            pred = parse_boxes(find_answer(completion_text(completion), extract, kind="box"))
            out.append(box_score(pred, gold, threshold))
        return out

    default = "iou" if threshold is None else f"iou_{round(threshold * 100)}"
    reward.__name__ = reward.__qualname__ = name or (default if extract == STRICT else f"{default}_{extract}")
    reward.__doc__ = (f"TRL reward: {'mean IoU' if threshold is None else f'share of boxes with IoU >= {threshold}'} "
                      "of the predicted boxes against the `answer` boxes; None when the answer holds no box.")
    return reward


iou = make_iou()
iou_50 = make_iou(0.5)
iou_75 = make_iou(0.75)
iou_lenient = make_iou(extract=LENIENT, name="iou_lenient")
