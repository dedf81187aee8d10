"""check-rewards: does each reward pay for right answers, and only for them, on your own data?

Reads a `dataset` table (what `prepare-data` wrote). For every row it renders the ground truth as whole
completions, in the surface forms a model really writes for the row's `answer_type` (right forms) and in
the forms a careless model or a reward hacker writes (wrong forms), scores every form with each reward
named, and counts agreement:

    number  right: plain, `\\boxed{}`, with a unit, `x = 3`, in a sentence, as a word ("three")
            wrong: a neighbouring number, the number inside a word or a file name, only inside
            `<think>`, two answers (two slots, "3 or 4", "3 cubes and 4 spheres")
    choice  right: `B`, `(B)`, `B.`, `B) text`, `Option B`, "The answer is B.", `\\boxed{B}`, the option
            text, the option text in other LaTeX spacing
            wrong: another letter, another option's text, "B or C", two slots, `B. <option C's text>`,
            only inside `<think>`
    text    right: as written, upper case, with a full stop, `\\boxed{}`, "The answer is ..."
            wrong: another answer of the data set, "X or Y", two slots, only inside `<think>`
    math    right: as written, `\\boxed{}`, other spacing, in `$...$`
            wrong: the answer plus one, two slots, only inside `<think>`
    box     right: a list, JSON `bbox_2d`, a ```json fence, `(x1,y1),(x2,y2)`, shifted by a pixel
            (where that keeps IoU >= 0.8)
            wrong: a box at IoU ~0.1, normalised coordinates against a pixel answer, two slots, only
            inside `<think>`

A number or text row with accepted alternatives (`metadata.answers`, see docs/data.md) also gets the first
alternative that differs from the answer as a right form and the answer and that alternative in two slots
as a wrong one; its wrong forms never use an accepted answer (the neighbour steps past them).

Every form has a think block and, where it is right, its answer in the answer slot (`<answer>` or
`\\boxed{}`), so it is right under every extraction mode. A reward pays a form when its value is at least
`PAID` (1 for pass/fail rewards; `iou` pays the shifted box ~0.9 and the IoU-0.1 box 0.1). It agrees with
a right form it pays and a wrong form it does not; an abstention (None) on some forms of a row is a
disagreement, while abstaining on every form of a row means the reward does not apply there (`count` on
a choice question, `iou` on a degenerate box): the row counts as n/a. Rows whose forms cannot be rendered
(a choice whose answer names no option) are counted as skipped.

Writes a JSON report atomically: agreement per answer type and reward, the first `MAX_FAILURES`
failures of each with row id, form, value and completion, and the manifest. `Result.passed` is False
when any answer type and reward falls below `min_agreement`; the command then exits 1.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rftcli.atomic import atomic_output, check_output
from rftcli.manifest import make_manifest
from rftcli.rewards.combine import DEFAULT_TIMEOUT_S, FailureLog, Isolation, apply_reward, load_rewards

PAID = 0.5
"""A reward pays a form when its value is at least this."""
MAX_FAILURES = 5
"""Failures kept per answer type and reward."""
NOT_ANSWER_REWARDS = frozenset({"format", "format_strict", "format_lenient", "overlong", "repetition"})
_THINK = "<think>I look at the image and work the answer out step by step.</think>\n"
_CHUNK = 512
_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen twenty").split()
_OTHER_TEXT = ("purple", "seven hundred", "none of these", "the left one")


@dataclass(frozen=True)
class Config:
    dataset: Path
    """Input dataset Parquet file (from prepare-data)."""
    out: Path
    """Output report (JSON: agreement per answer type and reward, first failures, manifest)."""
    rewards: tuple[str, ...] = ("accuracy", "count", "iou")
    """Rewards to check (NAME, pkg.module:fn or file.py:fn); each must compare completions with the answer."""
    min_agreement: float = 1.0
    """Lowest agreement accepted for any answer type and reward; below it the command exits 1."""
    split: str | None = None
    """Check only rows of this split (default: all rows)."""
    limit: int | None = None
    """Check only the first N rows."""
    timeout: float = DEFAULT_TIMEOUT_S
    """Seconds a reward may spend on one completion; a row that runs out counts as a disagreement."""
    overwrite: bool = False
    """Replace an existing report."""

    def __post_init__(self):
        if not self.rewards:
            raise ValueError("give at least one --reward")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"--min-agreement must be in [0, 1], got {self.min_agreement}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {self.limit}")
        Isolation(self.timeout)


@dataclass(frozen=True)
class Form:
    name: str
    completion: str
    right: bool


@dataclass
class Cell:
    """One answer type and reward."""

    answer_type: str
    reward: str
    rows: int = 0
    na_rows: int = 0
    checks: int = 0
    agreed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return self.agreed / self.checks if self.checks else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {"answer_type": self.answer_type, "reward": self.reward, "rows": self.rows, "na_rows": self.na_rows,
                "checks": self.checks, "agreed": self.agreed,
                "agreement": None if math.isnan(self.agreement) else self.agreement, "failures": self.failures}


@dataclass(frozen=True)
class Result:
    path: Path
    rows: int
    forms: int
    cells: list[Cell]
    skipped: dict[str, int]
    """Rows whose forms could not be rendered, per answer type."""
    min_agreement: float
    passed: bool


# ---------------------------------------------------------------- rendering

def _slot(text: str) -> str:
    return f"{_THINK}<answer>{text}</answer>"


def _two_slots(a: str, b: str) -> str:
    return f"{_THINK}<answer>{a}</answer> or maybe <answer>{b}</answer>"


def _think_only(text: str) -> str:
    return f"<think>The answer is <answer>{text}</answer>.</think>"


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _number_forms(gold: str, accepted: Sequence[str] = ()) -> list[Form]:
    from rftcli.rewards.numeric import numbers_equal, parse_number

    number = parse_number(gold)
    if number is None:
        return []
    pct = "%" if number.percent else ""
    taken = [n for n in map(parse_number, accepted) if n is not None]
    step = 1
    while any(numbers_equal(parse_number(_fmt(number.value + step) + pct), n) for n in taken):
        step += 1  # a neighbour that is an accepted answer is not wrong
    neighbour = _fmt(number.value + step) + pct
    bare = re.fullmatch(r"-?[\d.,/]+%?", gold) is not None
    whole = number.value.is_integer() and not number.percent and number.value >= 0
    forms = [Form("plain", _slot(gold), True), Form("boxed", f"{_THINK}The answer is \\boxed{{{gold}}}.", True),
             Form("equation", _slot(f"x = {gold}"), True),
             Form("neighbour", _slot(neighbour), False), Form("think only", _think_only(gold), False),
             Form("two slots", _two_slots(gold, neighbour), False), Form("hedge", _slot(f"{gold} or {neighbour}"), False),
             Form("in a word", _slot(f"item{gold}"), False),
             Form("in a file name", f"{_THINK}See CLEVR_val_{gold}.png and img_{gold}.jpg", False)]
    if bare:
        forms.append(Form("sentence, two numbers", _slot(f"There are {gold} cubes and {neighbour} spheres."), False))
        if not pct:
            forms.append(Form("with unit", _slot(f"{gold} cm"), True))
    if whole:
        forms.append(Form("sentence", _slot(f"There are {gold} objects."), True))
        if number.value <= 20:
            word = _WORDS[int(number.value)]
            forms += [Form("word", _slot(word), True), Form("word in a sentence", _slot(f"There are {word} objects."), True)]
    elif bare:
        forms.append(Form("sentence", _slot(f"The value is {gold}."), True))
    return forms


def _respaced(text: str) -> str:
    squeezed = "".join(text.split())
    return squeezed if squeezed != text else re.sub(r"([{}])", r" \1 ", text).strip()


def _choice_forms(gold: str, choices: Sequence[str] | None) -> list[Form]:
    from rftcli.rewards.accuracy import _OPTION_LABEL, _same_option, choice_letter, choice_letters, looks_like_math

    letter = choice_letter(gold, choices)
    if letter is None:
        return []
    k = ord(letter) - ord("A")
    options = [_OPTION_LABEL.sub("", str(o)).strip() for o in choices] if choices else None
    if options is not None and k >= len(options):
        return []
    if options:
        others = [i for i in range(len(options)) if i != k]
        distinct = [i for i in others if not _same_option(options[k], options[i]) and not _same_option(options[i], options[k])]
        m = distinct[0] if distinct else (others[0] if others else None)
    else:
        m = 1 if k == 0 else 0
    forms = [Form("letter", _slot(letter), True), Form("(letter)", _slot(f"({letter})"), True),
             Form("letter.", _slot(f"{letter}."), True), Form("Option letter", _slot(f"Option {letter}"), True),
             Form("sentence", _slot(f"The answer is {letter}."), True),
             Form("boxed", f"{_THINK}The answer is \\boxed{{{letter}}}.", True),
             Form("think only", _think_only(letter), False)]
    if m is not None:
        other = chr(ord("A") + m)
        forms += [Form("other letter", _slot(other), False), Form("two letters", _slot(f"{letter} or {other}"), False),
                  Form("two slots", _two_slots(letter, other), False)]
    if options:
        text = options[k]
        unique = all(not _same_option(text, options[i]) for i in range(len(options)) if i != k)
        if unique and text and not choice_letters(text):  # an option whose text is a letter reads as that letter
            forms += [Form("letter) text", _slot(f"{letter}) {text}"), True), Form("option text", _slot(text), True)]
            if looks_like_math(text) and _respaced(text) != text:
                forms.append(Form("option text respaced", _slot(_respaced(text)), True))
        if m is not None and m in distinct:
            forms += [Form("other option text", _slot(options[m]), False),
                      Form("letter. other text", _slot(f"{letter}. {options[m]}"), False)]
    return forms


def _text_forms(gold: str, others: Sequence[str], accepted: Sequence[str] = ()) -> list[Form]:
    from rftcli.rewards.accuracy import normalize_text

    key = normalize_text(gold)
    if not key:
        return []
    taken = {normalize_text(a) for a in accepted}
    other = next((o for o in [*others, *_OTHER_TEXT] if normalize_text(o) and normalize_text(o) != key
                  and normalize_text(o) not in taken
                  and key not in normalize_text(o) and normalize_text(o) not in key), None)
    forms = [Form("plain", _slot(gold), True), Form("upper case", _slot(gold.upper()), True),
             Form("full stop", _slot(f"{gold}."), True), Form("boxed", f"{_THINK}So \\boxed{{{gold}}}.", True),
             Form("sentence", _slot(f"The answer is {gold}."), True), Form("think only", _think_only(gold), False)]
    if other is not None:
        forms += [Form("other answer", _slot(other), False), Form("hedge", _slot(f"{gold} or {other}"), False),
                  Form("two slots", _two_slots(gold, other), False)]
    return forms


def _math_forms(gold: str) -> list[Form]:
    forms = [Form("plain", _slot(gold), True), Form("boxed", f"{_THINK}So \\boxed{{{gold}}}.", True),
             Form("dollars", _slot(f"${gold}$"), True), Form("think only", _think_only(gold), False)]
    if _respaced(gold) != gold:
        forms.append(Form("respaced", _slot(_respaced(gold)), True))
    if "\\infty" not in gold:  # infinity plus one is infinity
        wrong = f"{gold}+1"
        forms += [Form("plus one", _slot(wrong), False), Form("two slots", _two_slots(gold, wrong), False)]
    return forms


def _image_size(images: Any) -> tuple[int, int] | None:
    from PIL import Image

    if not images:
        return None
    try:
        return Image.open(io.BytesIO(images[0]["bytes"])).size
    except Exception:  # no bytes, or not an image: normalised coordinates are then left out
        return None


def _box_text(box: Sequence[float]) -> str:
    return "[" + ", ".join(_fmt(v) for v in box) + "]"


def _box_forms(gold: str, size: tuple[int, int] | None) -> list[Form]:
    from rftcli.rewards.grounding import box_iou, parse_boxes

    boxes = [tuple(min(b[i], b[i + 2]) if i < 2 else max(b[i - 2], b[i]) for i in range(4)) for b in parse_boxes(gold)]
    if not boxes:
        return []
    as_list = ", ".join(_box_text(b) for b in boxes)
    as_json = json.dumps([{"bbox_2d": [float(v) if not float(v).is_integer() else int(v) for v in b],
                           "label": "object"} for b in boxes])
    far = [(b[0] + 9 * (b[2] - b[0]) / 11, b[1], b[2] + 9 * (b[2] - b[0]) / 11, b[3]) for b in boxes]  # IoU 0.1
    forms = [Form("list", _slot(as_list), True), Form("json bbox_2d", _slot(as_json), True),
             Form("json fence", _slot(f"```json\n{as_json}\n```"), True),
             Form("IoU 0.1", _slot(", ".join(_box_text(b) for b in far)), False),
             Form("think only", _think_only(as_list), False),
             Form("two slots", _two_slots(as_list, ", ".join(_box_text(b) for b in far)), False)]
    if len(boxes) == 1:
        x1, y1, x2, y2 = boxes[0]
        forms.append(Form("corners", _slot(f"({_fmt(x1)},{_fmt(y1)}),({_fmt(x2)},{_fmt(y2)})"), True))
    shifted = [(b[0] + 1, b[1], b[2] + 1, b[3]) for b in boxes]
    if all(box_iou(s, b) >= 0.8 for s, b in zip(shifted, boxes, strict=True)):
        forms.append(Form("shifted a pixel", _slot(", ".join(_box_text(b) for b in shifted)), True))
    if size and max(max(b) for b in boxes) > 1.5:  # a pixel answer: normalised coordinates are wrong
        w, h = size
        norm = ", ".join(_box_text((round(b[0] / w, 3), round(b[1] / h, 3), round(b[2] / w, 3), round(b[3] / h, 3)))
                         for b in boxes)
        forms.append(Form("normalised", _slot(norm), False))
    return forms


def _alternative(gold: str, kind: str, accepted: Sequence[str]) -> str | None:
    """The first accepted answer that is not `gold` read as `kind`, and reads as that kind."""
    from rftcli.rewards.accuracy import normalize_text
    from rftcli.rewards.numeric import numbers_equal, parse_number

    for alt in accepted:
        if kind == "number":
            a, g = parse_number(alt), parse_number(gold)
            if a is not None and g is not None and not numbers_equal(a, g):
                return alt
        elif normalize_text(alt) and normalize_text(alt) != normalize_text(gold):
            return alt
    return None


def render_forms(row: dict[str, Any], others: Sequence[str] = ()) -> list[Form]:
    """The right and wrong completions for one dataset row (see the module docstring); [] when the row's
    answer cannot be rendered. `others` are other answers of the same type, for wrong text answers."""
    from rftcli.rewards.accuracy import accepted_answers, infer_answer_type

    gold = "" if row.get("answer") is None else str(row["answer"]).strip()
    if not gold:
        return []
    choices = row.get("choices")
    kind = (row.get("answer_type") or "").strip().lower() or infer_answer_type(gold, choices)
    if kind in ("number", "text"):
        accepted = accepted_answers(row.get("metadata"))
        forms = _number_forms(gold, accepted) if kind == "number" else _text_forms(gold, others, accepted)
        alt = _alternative(gold, kind, accepted)
        if forms and alt is not None:
            forms += [Form("accepted alternative", _slot(alt), True),
                      Form("two accepted answers", _two_slots(gold, alt), False)]
        return forms
    if kind == "choice":
        return _choice_forms(gold, [str(c) for c in choices] if choices is not None else None)
    if kind == "math":
        return _math_forms(gold)
    if kind == "box":
        return _box_forms(gold, _image_size(row.get("images")))
    return []


# ---------------------------------------------------------------- checking

def run(config: Config) -> Result:
    from rftcli.rewards.accuracy import infer_answer_type
    from rftcli.schema import read_table
    from rftcli.stages.rollout import select_split

    check_output(config.out, config.overwrite, inputs=[config.dataset])
    rewards = load_rewards(config.rewards)
    refused = [r.name for r in rewards if r.name in NOT_ANSWER_REWARDS]
    if refused:
        raise ValueError(f"check-rewards checks rewards that compare a completion with the answer; "
                         f"{', '.join(refused)} does not (check it on scored rollouts with `rftcli score`)")
    table = select_split(read_table(config.dataset, "dataset").table, config.split)
    if config.limit is not None:
        table = table.slice(0, config.limit)
    # Rows without their images (a table's images can be gigabytes as Python objects); box rows fetch theirs.
    rows = table.drop_columns([c for c in ("images",) if c in table.column_names]).to_pylist()
    if not rows:
        raise ValueError(f"{config.dataset}: no rows to check" + (f" in split {config.split!r}" if config.split else ""))

    kinds = [(r.get("answer_type") or "").strip().lower()
             or infer_answer_type(str(r.get("answer") or ""), r.get("choices")) for r in rows]
    text_answers = [str(r["answer"]) for r, k in zip(rows, kinds, strict=True) if k == "text" and r.get("answer")]
    # (row index, form) for every completion to score
    items: list[tuple[int, Form]] = []
    skipped: dict[str, int] = {}
    for i, (row, kind) in enumerate(zip(rows, kinds, strict=True)):
        if kind == "box" and "images" in table.column_names:
            row = {**row, "images": table.column("images")[i].as_py()}
        forms = render_forms(row, text_answers[:200])
        if not forms:
            skipped[kind] = skipped.get(kind, 0) + 1
        items += [(i, f) for f in forms]

    passed_columns = [c for c in table.column_names if c != "images"]
    values: dict[str, list[float | None]] = {r.name: [] for r in rewards}
    isolation = Isolation(config.timeout, "abstain")
    failures = FailureLog()
    for start in range(0, len(items), _CHUNK):
        chunk = items[start:start + _CHUNK]
        completions = [f.completion for _, f in chunk]
        columns = {c: [rows[i].get(c) for i, _ in chunk] for c in passed_columns}
        columns["num_tokens"] = [len(c) // 4 for c in completions]
        columns["max_new_tokens"] = [1024] * len(chunk)
        for r in rewards:
            values[r.name] += apply_reward(r, completions, columns, {}, isolation=isolation, failures=failures,
                                           offset=start)

    cells: dict[tuple[str, str], Cell] = {}
    by_row: dict[int, list[int]] = {}
    for k, (i, _) in enumerate(items):
        by_row.setdefault(i, []).append(k)
    for r in rewards:
        for i, ks in by_row.items():
            cell = cells.setdefault((kinds[i], r.name), Cell(kinds[i], r.name))
            vals = [values[r.name][k] for k in ks]
            if all(v is None for v in vals):
                cell.na_rows += 1
                continue
            cell.rows += 1
            for k, v in zip(ks, vals, strict=True):
                form = items[k][1]
                ok = v is not None and (v >= PAID) == form.right
                cell.checks += 1
                cell.agreed += ok
                if not ok and len(cell.failures) < MAX_FAILURES:
                    cell.failures.append({"id": rows[i].get("id"), "form": form.name,
                                          "expected": "paid" if form.right else "not paid", "value": v,
                                          "answer": rows[i].get("answer"), "completion": form.completion})
    ordered = sorted(cells.values(), key=lambda c: (c.answer_type, [r.name for r in rewards].index(c.reward)))
    passed = all(c.checks == 0 or c.agreement >= config.min_agreement for c in ordered)
    manifest = make_manifest("check-rewards", config, {"dataset": config.dataset})
    report = {"passed": passed, "min_agreement": config.min_agreement, "rows": len(rows), "forms": len(items),
              "paid_at": PAID, "skipped": skipped, "cells": [c.as_dict() for c in ordered],
              "reward_failures": failures.messages, "manifest": manifest}
    out = Path(config.out)
    with atomic_output(out, overwrite=config.overwrite) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    return Result(path=out, rows=len(rows), forms=len(items), cells=ordered, skipped=skipped,
                  min_agreement=config.min_agreement, passed=passed)
