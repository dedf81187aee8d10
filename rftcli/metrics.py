"""Evaluation metrics as small pure functions: pass@k, maj@k, rates, percentiles, breakdowns, flips.

Everything here takes plain rows (dicts of the `eval` table: `id, task, answer, answer_type, choices,
metadata, sample_index, completion, num_tokens, finish_reason, correct, format_ok, reward_<name>`)
and returns plain numbers and dicts; nothing reads or writes files.

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on
Code", eq. 1): with n samples of which c are correct, 1 - C(n-c, k) / C(n, k), averaged over prompts.
It is computed with exact integer binomials rather than the paper's running product, which is exact
for the sample counts an eval uses.

maj@k votes among the k samples of a prompt on the *normalised answer in the answer slot* (the strict
extraction of rftcli.rewards.text; numbers by value,
choices by option letter, text by `normalize_text`, boxes by their rounded corners), samples without
an answer not voting; the prompt counts as correct when the first sample holding the winning answer is
correct. Ties go to the answer that appeared first. Boxes seldom agree exactly, so for grounding maj@k
is close to the first sample's accuracy.

A prompt's correctness (for flips between models and per-prompt tables) is its maj@k outcome; with
greedy decoding (k = 1) that is simply whether its one answer is right.

Examples:
    >>> pass_at_k(n=4, c=1, k=2)
    0.5
    >>> majority_index(["4", None, "3", "3"])
    2
    >>> percentile([1, 2, 3, 4], 0.5)
    2.5
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from rftcli.rewards.accuracy import choice_letter, infer_answer_type, normalize_text
from rftcli.rewards.numeric import parse_number
from rftcli.rewards.text import STRICT, find_answer

Row = Mapping[str, Any]
_BOX_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")  # as the accuracy reward reads a box


# ---------------------------------------------------------------- pass@k and maj@k

def read_box(text: str) -> list[float] | None:
    """The box [x1, y1, x2, y2] in `text`, read as the accuracy reward reads it; None unless exactly 4
    numbers (several boxes are a hedge, not an answer)."""
    numbers = _BOX_NUMBER.findall(text)
    return [float(v) for v in numbers] if len(numbers) == 4 else None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one prompt: the chance that k of its n samples, drawn without replacement,
    hold at least one of the c correct ones."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every draw of k includes a correct sample
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def reported_ks(n: int) -> list[int]:
    """The k of pass@k worth reporting with n samples: 1, 2, 4, ... below n, and n."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def answer_key(pred: str | None, answer: str, answer_type: str | None, choices: Sequence[str] | None) -> Hashable:
    """What two predictions must share to count as the same vote (None: no answer, no vote)."""
    if pred is None or not pred.strip():
        return None
    choices = list(choices) if choices is not None else None
    kind = (answer_type or "").strip().lower() or infer_answer_type(answer, choices)
    if kind == "choice":
        letter = choice_letter(pred, choices)
        return ("choice", letter) if letter else ("text", normalize_text(pred))
    if kind == "box":
        box = read_box(pred)
        return ("box", tuple(round(v) for v in box)) if box else ("text", normalize_text(pred))
    if kind in ("number", "math"):
        number = parse_number(pred)
        if number is not None:
            return ("number", float(f"{number.value:.9g}"))
        if kind == "math":
            return ("math", "".join(pred.split()))
    return ("text", normalize_text(pred))


def majority_index(keys: Sequence[Hashable]) -> int | None:
    """Index of the first sample holding the most common non-None key; None when no sample has one."""
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return None
    top = max(votes.values())
    return next(i for i, k in enumerate(keys) if k is not None and votes[k] == top)


def vote(samples: Sequence[Row], mode: str = STRICT) -> tuple[bool, str | None]:
    """maj@k of one prompt's samples (ordered by sample_index): (correct, the winning answer). `mode` is the
    extraction mode `correct` was decided by ("whole" for eval's direct-answer prompts)."""
    first = samples[0]
    # The answer slot only, as `correct` is decided: a number elsewhere in the text casts no vote.
    preds = [find_answer(s["completion"], mode, first["answer_type"]) for s in samples]
    keys = [answer_key(p, first["answer"], first["answer_type"], first["choices"]) for p in preds]
    i = majority_index(keys)
    return (False, None) if i is None else (bool(samples[i]["correct"]), preds[i])


def group_prompts(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Rows by prompt id, in first-seen order, each prompt's samples ordered by sample_index."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r["id"], []).append(r)
    return {pid: sorted(samples, key=lambda s: s["sample_index"]) for pid, samples in groups.items()}


def prompt_outcomes(rows: Iterable[Row], mode: str = STRICT) -> dict[str, tuple[bool, str | None]]:
    """Per prompt id: (correct by majority vote, the voted answer)."""
    return {pid: vote(samples, mode) for pid, samples in group_prompts(rows).items()}


# ---------------------------------------------------------------- plain statistics

def rate(flags: Iterable[bool]) -> float:
    flags = list(flags)
    return sum(bool(f) for f in flags) / len(flags) if flags else math.nan


def mean(values: Iterable[float]) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def row_categories(row: Row, key: str) -> list[str]:
    """The categories of a row under `key`: a column of the row (`answer`, `task`) or a field of its
    `metadata` JSON (dotted for nested objects: `source.name`; `metadata.task` for a field a column's name
    would shadow). A list value gives several categories (a row counts toward each); a missing value gives none."""
    explicit = key.startswith("metadata.")
    if explicit:
        key = key.removeprefix("metadata.")
    if key in row and key != "metadata" and not explicit:
        value: Any = row[key]
    else:
        try:
            value = json.loads(row.get("metadata") or "{}")
        except json.JSONDecodeError:
            return []
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [str(v) for v in values if v is not None and str(v) != ""]


def group_order(group: str) -> tuple:
    """Sort key for group names: numbers by value first ("2" before "10"), then text."""
    try:
        return (0, float(group), group)
    except ValueError:
        return (1, 0.0, group)


def accuracy_by(rows: Iterable[Row], groups_of) -> dict[str, float]:
    """Mean of `correct` per group; `groups_of(row)` names the row's groups. Ordered by `group_order`."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        for g in groups_of(r):
            hits[g].append(bool(r["correct"]))
    return {g: rate(hits[g]) for g in sorted(hits, key=group_order)}


# ---------------------------------------------------------------- one model, several models

def summarize(rows: Sequence[Row], seconds: float, category_key: str = "category",
              reward_names: Sequence[str] = (), mode: str = STRICT) -> dict[str, Any]:
    """The summary of one model's rows: every number the report shows for it (`mode`: the extraction mode
    of the votes, as `vote`).

    `accuracy` is the mean correctness over all samples, which is pass@1 (k = 1 of the estimator).
    """
    prompts = group_prompts(rows)
    n = min(len(s) for s in prompts.values())
    outcomes = {pid: vote(s, mode) for pid, s in prompts.items()}
    tokens = [r["num_tokens"] for r in rows]
    return {
        "rows": len(rows),
        "prompts": len(prompts),
        "samples": n,
        "accuracy": rate(r["correct"] for r in rows),
        "pass_at_k": {str(k): mean(pass_at_k(len(s[:n]), sum(x["correct"] for x in s[:n]), k)
                                   for s in prompts.values()) for k in reported_ks(n)},
        "maj_at_k": {str(n): rate(c for c, _ in outcomes.values())},
        "format_rate": rate(r["format_ok"] for r in rows),
        "accuracy_by_task": accuracy_by(rows, lambda r: [r["task"]]),
        "accuracy_by_answer_type": accuracy_by(rows, lambda r: [r["answer_type"]]),
        "category_key": category_key,
        "accuracy_by_category": accuracy_by(rows, lambda r: row_categories(r, category_key)),
        "mean_reward": {name: mean(r.get(f"reward_{name}") for r in rows) for name in reward_names},
        "mean_tokens": mean(tokens),
        "p95_tokens": percentile(tokens, 0.95),
        "truncation_rate": rate(r["finish_reason"] == "length" for r in rows),
        "seconds": seconds,
        "tokens_per_s": sum(tokens) / seconds if seconds > 0 else math.nan,
    }


def flips(before: Mapping[str, tuple[bool, Any]], after: Mapping[str, tuple[bool, Any]]) -> dict[str, list[str]]:
    """Prompt ids whose correctness changed between two models (over the ids both answered)."""
    shared = [pid for pid in before if pid in after]
    return {
        "wrong_to_right": [p for p in shared if not before[p][0] and after[p][0]],
        "right_to_wrong": [p for p in shared if before[p][0] and not after[p][0]],
        "both_right": [p for p in shared if before[p][0] and after[p][0]],
        "both_wrong": [p for p in shared if not before[p][0] and not after[p][0]],
    }


_COMPARED = ("accuracy", "format_rate", "mean_tokens", "p95_tokens", "truncation_rate")


def compare(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Deltas of every model against the first: headline numbers, pass@k, maj@k and each category."""
    labels = list(summaries)
    base = summaries[labels[0]]
    out: dict[str, Any] = {"baseline": labels[0], "deltas": {}}
    for label in labels:
        s = summaries[label]
        d = {key: s[key] - base[key] for key in _COMPARED}
        for family in ("pass_at_k", "maj_at_k"):
            d[family] = {k: v - base[family][k] for k, v in s[family].items() if k in base[family]}
        for family in ("accuracy_by_task", "accuracy_by_answer_type", "accuracy_by_category"):
            d[family] = {g: v - base[family][g] for g, v in s[family].items() if g in base[family]}
        out["deltas"][label] = d
    return out


def flip_summary(outcomes: Mapping[str, Mapping[str, tuple[bool, Any]]]) -> list[dict[str, Any]]:
    """Flips between each pair of consecutive models: counts and the prompt ids."""
    labels = list(outcomes)
    out = []
    for a, b in zip(labels, labels[1:], strict=False):
        f = flips(outcomes[a], outcomes[b])
        out.append({"from": a, "to": b, **{f"{k}_count": len(v) for k, v in f.items()},
                    "net": len(f["wrong_to_right"]) - len(f["right_to_wrong"]),
                    "wrong_to_right": f["wrong_to_right"], "right_to_wrong": f["right_to_wrong"]})
    return out
