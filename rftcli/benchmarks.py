"""Benchmark presets for `eval --preset NAME`: the prompt and scorer settings of common RFT benchmarks,
for data converted by `prepare-data` from the benchmarks' published layouts (`rftcli.formats`).

    mathvista    MathVista: multiple choice (stored as the option letter) and free-form numbers / text.
                 A number answer whose metadata carries MathVista's `precision` (decimals of a float
                 answer) is correct when the prediction rounded to that many decimals equals the ground
                 truth rounded alike (`precision_accuracy`). Accuracy by metadata `task` (FQA, GPS, MWP,
                 TQA, VQA in the paper's tables).
    geometry3k   Geometry3K: choice (option letter) or math (LaTeX such as `8\\sqrt{3}`, compared by
                 math-verify) or number. Accuracy by metadata `problem_type_goal`.
    clevr-count  CLEVR / Super-CLEVR counting: only the rows with answer_type number (the counting
                 questions; CLEVR's yes/no and attribute questions are left out and counted in the
                 summary as `skipped_rows`). Accuracy by the true count (the `answer` column), where
                 counting models usually break down.
    refcoco      RefCOCO/+/g grounding: the answer a box `[x1, y1, x2, y2]` in pixels of the image as
                 stored (answer_type box). Scored by the reward library's `iou_50` (correct when the
                 predicted box, read as JSON `bbox_2d` or plain text, has IoU >= 0.5 and no extra box
                 hedges); the mean IoU (`iou`) is reported too. Accuracy by metadata `category`.

Every preset evaluates all rows of the file (split `all`: prepare-data assigns splits by id hash, so a
benchmark file's rows would otherwise land mostly in train) and, except clevr-count, refuses rows whose
answer_type it does not score, naming the row. Flags given on the command line win over a preset.

Prompts are used as prepare-data built them. For rows that come from elsewhere, a choice row whose prompt
does not list its options gets them as "A. ..." lines (`rftcli.formats.prompt.render_choices`) before
the answer instruction, and a refcoco row without the grounding request gets it as a prefix.
Departures from the benchmarks' official scripts: no LLM-based answer extraction (MathVista's uses
GPT-4; here the answer comes from `<answer>`, `\\boxed{}` or the last number), so models that ignore the
answer format score lower than officially.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rftcli.instructions import GROUNDING_REQUEST, INSTRUCTION
from rftcli.rewards.accuracy import accuracy, make_accuracy
from rftcli.rewards.numeric import parse_number, read_number
from rftcli.rewards.text import STRICT, WHOLE, completion_text, find_answer


@dataclass(frozen=True)
class Preset:
    name: str
    answer_types: tuple[str, ...]
    """answer_type values the preset scores; other rows stop the run."""
    scorer: str
    """Reward spec whose 1.0 marks a correct answer."""
    category_key: str
    """Column or metadata field for accuracy by category."""
    max_new_tokens: int
    """Room for step-by-step reasoning before the answer."""
    rewards: tuple[str, ...] = ()
    """Further reward columns whose means are reported."""
    grounding: bool = False
    """Prefix prompts with GROUNDING_REQUEST."""
    select: bool = False
    """Evaluate only the rows of `answer_types` (skip the rest) instead of refusing the others."""
    split: str = "all"
    """Rows evaluated: the whole file."""


def get_preset(name: str) -> Preset:
    presets = {
        # metadata.task: the `task` column, always "mathvista", would shadow MathVista's own task field
        "mathvista": Preset("mathvista", ("choice", "number", "text"), "rftcli.benchmarks:precision_accuracy",
                            "metadata.task", 1024),
        "geometry3k": Preset("geometry3k", ("choice", "math", "number"), "accuracy", "problem_type_goal", 1024),
        "clevr-count": Preset("clevr-count", ("number",), "accuracy", "answer", 256, select=True),
        "refcoco": Preset("refcoco", ("box",), "iou_50", "category", 256, rewards=("iou",), grounding=True),
    }
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return presets[name]


PRESETS = ("mathvista", "geometry3k", "clevr-count", "refcoco")


def select_rows(preset: Preset, rows: Sequence[Mapping[str, Any]], source: str) -> list[Mapping[str, Any]]:
    """The rows the preset scores. A preset that selects drops the others; the rest refuse them with
    one line naming the first such row."""
    if preset.select:
        return [r for r in rows if r["answer_type"] in preset.answer_types]
    for i, r in enumerate(rows):
        if r["answer_type"] not in preset.answer_types:
            raise ValueError(f"{source}: row {i} (id {r['id']!r}), column 'answer_type': {r['answer_type']!r} is not "
                             f"scored by preset {preset.name} (expects {', '.join(preset.answer_types)}); "
                             "set answer_type when converting with prepare-data")
    return list(rows)


def build_prompt(preset: Preset, row: Mapping[str, Any]) -> str:
    """The prompt the preset sends for a row (see the module docstring)."""
    from rftcli.formats.prompt import render_choices

    prompt = row["prompt"]
    choices = row.get("choices")
    if row["answer_type"] == "choice" and choices:
        # Options go before the answer instruction, as prepare-data puts them.
        head, sep, tail = prompt.rpartition(INSTRUCTION) if INSTRUCTION in prompt else (prompt, "", "")
        listed = render_choices(head.rstrip(), choices)
        if listed != head.rstrip():
            prompt = f"{listed}\n{sep}{tail}" if sep else listed
    if preset.grounding and GROUNDING_REQUEST not in prompt:
        prompt = GROUNDING_REQUEST + prompt
    return prompt


# ---------------------------------------------------------------- scorers with TRL's reward signature

def _precision(metadata: str | None) -> int | None:
    try:
        value = json.loads(metadata or "{}").get("precision")
        return None if value is None else int(float(value))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return None


def precision_accuracy(completions: Sequence[Any], answer: Sequence[Any], answer_type: Sequence[str] | None = None,
                       choices: Sequence[Any] | None = None, metadata: Sequence[str | None] | None = None,
                       extract: str = STRICT, **kwargs: Any) -> list[float | None]:
    """MathVista-style accuracy: number answers whose metadata gives `precision` are compared after
    rounding both sides to that many decimals; everything else as the `accuracy` reward. `extract` is the
    extraction mode (`eval --prompt direct` scores with "whole", `precision_accuracy_whole`)."""
    scorer = accuracy if extract == STRICT else make_accuracy(extract)
    out = scorer(completions, answer=answer, answer_type=answer_type, choices=choices)
    metadata = metadata if metadata is not None else [None] * len(completions)
    types = answer_type if answer_type is not None else [None] * len(completions)
    for i, (c, gold, kind, meta) in enumerate(zip(completions, answer, types, metadata, strict=True)):
        digits = _precision(meta)
        if kind != "number" or digits is None or out[i] is None:
            continue
        pred = find_answer(completion_text(c), extract, "number")  # as the accuracy reward reads it
        p, g = read_number(pred) if pred else None, parse_number(str(gold))
        if p is not None and g is not None:
            out[i] = 1.0 if round(p.value, digits) == round(g.value, digits) else 0.0
    return out


def precision_accuracy_whole(completions: Sequence[Any], answer: Sequence[Any], **columns: Any) -> list[float | None]:
    """`precision_accuracy` under the direct-answer rule (extraction mode "whole")."""
    return precision_accuracy(completions, answer, **{**columns, "extract": WHOLE})
