"""The eval grid: every model on every evaluation set under every prompt variant, one cell per
(model, set, prompt).

What it holds:
    sets          `EvalSet`: a labelled dataset's rows, as each prompt variant asks them
    rules         the scorer each variant is scored by (`rule_rewards`): `dataset` and `think` keep the
                  scorer as it is (the answer slot only); `direct` and custom variants swap a built-in
                  scorer for the same reward under extraction mode "whole" (`rftcli.rewards.text`), so a
                  bare "3" can pay; a scorer of your own keeps its own extraction (the cell says so)
    cells         `grid_cell`: rows, accuracy, lenient accuracy, rule, format rate, truncation rate, mean
                  length, pass@k / maj@k with samples, and the contamination record of the model on that set
    tables        the grid as text tables (`grid_tables`) and markdown with a chart (`grid_markdown`)

Nothing here generates; `rftcli.stages.eval` does, and hands the rows over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rftcli.prompt_variants import STRICT_RULE, WHOLE_RULE, PromptVariant

_FACTORIES = {"accuracy": ("accuracy", None), "accuracy_boxed": ("accuracy", None),
              "accuracy_strict": ("accuracy", None), "count": ("count", None), "iou": ("iou", None),
              "iou_50": ("iou", 0.5), "iou_75": ("iou", 0.75)}
"""Built-in scorers that have a direct-answer ("whole") form: (family, IoU threshold). MathVista's
`precision_accuracy` has one too (`rftcli.benchmarks.precision_accuracy_whole`)."""


@dataclass
class EvalSet:
    label: str
    """The set's name in tables (--set-label; default the file's stem)."""
    path: Path
    """The dataset file."""
    prompts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """The rows to evaluate by prompt variant name, each asked as that variant asks it."""
    hash_of: dict[str, bytes] = field(default_factory=dict)
    """Content hash by row id, for the contamination check."""
    skipped: int = 0
    """Rows the preset left out."""

    @property
    def rows(self) -> int:
        return len(next(iter(self.prompts.values()))) if self.prompts else 0


def whole_scorer(name: str, fn=None):
    """The built-in scorer `name` (whose function is `fn`, when given: a function of your own under a built-in's
    name is not swapped) under extraction mode "whole" (same name, same comparison), or None."""
    from rftcli import benchmarks
    from rftcli.rewards import builtin_rewards

    if name == "precision_accuracy" and fn in (None, benchmarks.precision_accuracy):  # --preset mathvista
        return benchmarks.precision_accuracy_whole
    if name not in _FACTORIES or fn not in (None, builtin_rewards().get(name)):
        return None
    from rftcli.rewards.accuracy import make_accuracy
    from rftcli.rewards.count import make_count
    from rftcli.rewards.grounding import make_iou

    family, threshold = _FACTORIES[name]
    if family == "accuracy":
        return make_accuracy(WHOLE_RULE, name=name)
    if family == "count":
        return make_count(WHOLE_RULE, name=name)
    return make_iou(threshold, WHOLE_RULE, name=name)


def rule_rewards(rewards: Sequence[Any], variant: PromptVariant) -> tuple[list[Any], str]:
    """The rewards a variant's rows are scored with, and the rule that decided `correct`: `strict`, `whole`,
    or `own (<scorer>)` for a scorer without a direct-answer form. Only the scorer (the first) changes."""
    from dataclasses import replace

    scorer = rewards[0]
    if variant.rule == STRICT_RULE:
        return list(rewards), STRICT_RULE
    fn = whole_scorer(scorer.name, scorer.fn)
    if fn is None:
        return list(rewards), f"own ({scorer.name})"
    return [replace(scorer, fn=fn), *rewards[1:]], WHOLE_RULE


def vote_mode(rule: str) -> str:
    """The extraction mode maj@k votes with under `rule`."""
    from rftcli.rewards.text import STRICT, WHOLE

    return WHOLE if rule == WHOLE_RULE else STRICT


def grid_cell(label: str, set_label: str, variant: str, rule: str, s: Mapping[str, Any],
              contamination: Mapping[str, Any], resumed: bool) -> dict[str, Any]:
    """One cell of summary.json's `grid` from a `rftcli.metrics.summarize` of its rows."""
    cell = {"model": label, "set": set_label, "prompt": variant, "rule": rule, "rows": s["rows"],
            "prompts": s["prompts"], "accuracy": s["accuracy"],
            "accuracy_lenient": s["mean_reward"].get("accuracy_lenient"), "format_rate": s["format_rate"],
            "truncation_rate": s["truncation_rate"], "mean_length": s["mean_tokens"],
            "contamination": dict(contamination), "resumed": resumed}
    if s["samples"] > 1:
        cell.update(pass_at_k=s["pass_at_k"], maj_at_k=s["maj_at_k"])
    return cell


def is_grid(summary: Mapping[str, Any]) -> bool:
    """Whether the run had more than one set or prompt (else the plain report says everything)."""
    return len(summary.get("sets", {})) > 1 or len(summary.get("prompts", {})) > 1


# ---------------------------------------------------------------- tables and chart

def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def accuracy_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Accuracy with model rows and one column per (set, prompt)."""
    columns = [(s, p) for s in summary["sets"] for p in summary["prompts"]]
    by = {(c["model"], c["set"], c["prompt"]): c for c in summary["grid"]}
    models = list(dict.fromkeys(c["model"] for c in summary["grid"]))
    rows = [[m] + [_pct(by[(m, s, p)]["accuracy"]) for s, p in columns] for m in models]
    return ["model", *[f"{s} / {p}" for s, p in columns]], rows


def cell_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Every cell on its own row: rule, rows, accuracy strict and lenient, format, truncation, length, seen."""
    header = ["model", "set", "prompt", "rule", "rows", "accuracy", "lenient", "format", "truncated",
              "mean tokens", "trained on"]
    rows = []
    for c in summary["grid"]:
        seen = c["contamination"]
        rows.append([c["model"], c["set"], c["prompt"], c["rule"], str(c["rows"]), _pct(c["accuracy"]),
                     _pct(c["accuracy_lenient"]), _pct(c["format_rate"]), _pct(c["truncation_rate"]),
                     "-" if c["mean_length"] is None or c["mean_length"] != c["mean_length"] else f"{c['mean_length']:.1f}",
                     f"{seen['trained_rows']}/{seen['trained_rows'] + seen['unseen_rows']}" if seen["recorded"] else "-"])
    return header, rows


def grid_tables(summary: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the grid tables for the terminal; none for one set under one prompt."""
    if not is_grid(summary):
        return []
    return [("accuracy by set / prompt", *accuracy_table(summary))]


def grid_chart(Figure, summary: Mapping[str, Any], path: Path) -> None:
    """grid.png: accuracy per model, grouped by set, one bar colour per prompt variant."""
    sets, prompts = list(summary["sets"]), list(summary["prompts"])
    models = list(dict.fromkeys(c["model"] for c in summary["grid"]))
    by = {(c["model"], c["set"], c["prompt"]): c["accuracy"] for c in summary["grid"]}
    groups = [(s, m) for s in sets for m in models]
    fig = Figure(figsize=(max(5.0, 1.5 + 0.35 * len(groups) * len(prompts)), 3.8), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(prompts)
    for i, p in enumerate(prompts):
        xs = [j + (i - (len(prompts) - 1) / 2) * width for j in range(len(groups))]
        ys = [by[(m, s, p)] if by[(m, s, p)] is not None else math.nan for s, m in groups]
        bars = ax.bar(xs, ys, width=width, label=p, color=f"C{i}")
        if len(groups) * len(prompts) <= 24:
            ax.bar_label(bars, labels=[_pct(y) for y in ys], fontsize="x-small", padding=1,
                         rotation=90 if len(prompts) > 2 else 0)
    ax.set_xticks(range(len(groups)), [f"{m}\n{s}" for s, m in groups], fontsize="small",
                  rotation=30 if len(groups) > 6 else 0)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy per model and set, by prompt")
    ax.legend(title="prompt", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=110)


def grid_markdown(summary: Mapping[str, Any], folder: Path, Figure, md_table) -> tuple[list[str], list[str]]:
    """The report's "Sets and prompts" section and the charts it wrote (grid.png with matplotlib)."""
    if not is_grid(summary):
        return [], []
    charts = []
    if Figure is not None:
        grid_chart(Figure, summary, folder / "grid.png")
        charts.append("grid.png")
    sets = ", ".join(f"`{label}` (`{s['path']}`, {s['rows']} rows)" for label, s in summary["sets"].items())
    prompts = ", ".join(f"`{name}` (rule {p['rule']})" for name, p in summary["prompts"].items())
    first = (next(iter(summary["sets"])), next(iter(summary["prompts"])))
    md = ["## Sets and prompts", "", f"Sets: {sets}. Prompts: {prompts}. Rule `strict` reads the answer slot "
          "only; `whole` (direct-answer prompts) takes the slot, else the whole answer when it states exactly "
          f"one. The sections above are for set `{first[0]}` under prompt `{first[1]}`; every cell is in "
          "`summary.json` (`grid`).", "", md_table(*accuracy_table(summary)), ""]
    if charts:
        md += ["![accuracy by set and prompt](grid.png)", ""]
    md += ["Every cell:", "", md_table(*cell_table(summary)), ""]
    return md, charts
