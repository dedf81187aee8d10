"""The eval report: rich tables for the terminal, and `report.md` with PNG charts for a folder.

Reads only what `eval` hands it (its summary, per-model response lengths) and, optionally, training
logs (`metrics.jsonl` of sft-coldstart / train-grpo checkpoints: one JSON object per logged step).
Charts need matplotlib (`pip install 'rftcli[report]'`); without it `report.md` is written with every
table and a line saying the charts were skipped.

Charts:
    accuracy.png   accuracy overall and per category (else per task) per model, grouped bars
    lengths.png    response-length distribution, one panel per model, with the max_new_tokens limit
    training.png   reward and KL over steps (one line per metrics file; the KL panel says when KL was
                   off), and each run's loss on its own axis (only with --metrics)
    grid.png       accuracy per model and set, one bar per prompt variant (only with several sets or
                   prompts; `rftcli.eval_grid`)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rftcli.metrics import group_order

TRAINING_KEYS = ("reward", "kl", "loss")
INSTALL_HINT = "pip install 'rftcli[report]'"


# ---------------------------------------------------------------- training logs

def read_training_metrics(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """(step, value) series for reward, KL and loss from a metrics.jsonl; a bad line fails naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such metrics file (sft-coldstart and train-grpo write metrics.jsonl)")
    series: dict[str, list[tuple[float, float]]] = {k: [] for k in TRAINING_KEYS}
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {i}: not valid JSON ({err.msg})") from None
        step = entry.get("step") if isinstance(entry, dict) else None
        if not isinstance(step, (int, float)):
            continue  # the trainer's closing summary line carries no step
        for key in TRAINING_KEYS:
            value = entry.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                series[key].append((float(step), float(value)))
    return {k: v for k, v in series.items() if v}


def metrics_labels(paths: Sequence[Path]) -> list[str]:
    """A label per metrics file: its folder's name (out/grpo/metrics.jsonl -> grpo), made unique."""
    labels: list[str] = []
    for p in paths:
        name = Path(p).resolve().parent.name or str(p)
        label, n = name, 2
        while label in labels:
            label, n = f"{name}-{n}", n + 1
        labels.append(label)
    return labels


# ---------------------------------------------------------------- formatting

def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def _delta_pp(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:+.1f} pp"


def _num(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _breakdown(summary: Mapping[str, Any]) -> tuple[str, str]:
    """(summary key, title) of the per-group accuracy the chart and tables lead with."""
    models = summary["models"].values()
    if any(s["accuracy_by_category"] for s in models):
        key = next(iter(models))["category_key"]
        return "accuracy_by_category", f"category ({key})"
    return "accuracy_by_task", "task"


def side_by_side(summary: Mapping[str, Any], columns: str = "all") -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main comparison: one row per model, accuracy deltas against the first.
    `columns`: all, quality (accuracy, pass@k, maj@k, format) or cost (lengths, truncation, speed)."""
    k = str(summary["samples"])
    baseline = summary["comparison"]["baseline"]
    header, rows = ["model"], [[label] for label in summary["models"]]
    if columns in ("all", "quality"):
        header += ["accuracy", f"Δ vs {baseline}"] + ([f"pass@{k}", f"maj@{k}"] if summary["samples"] > 1 else [])
        header += ["format"]
        for row, (label, s) in zip(rows, summary["models"].items(), strict=True):
            d = summary["comparison"]["deltas"][label]
            row += [_pct(s["accuracy"]), "" if label == baseline else _delta_pp(d["accuracy"])]
            row += [_pct(s["pass_at_k"][k]), _pct(s["maj_at_k"][k])] if summary["samples"] > 1 else []
            row += [_pct(s["format_rate"])]
    if columns in ("all", "cost"):
        header += ["mean tokens", "p95 tokens", "truncated", "tokens/s"]
        for row, s in zip(rows, summary["models"].values(), strict=True):
            row += [_num(s["mean_tokens"]), _num(s["p95_tokens"]), _pct(s["truncation_rate"]),
                    _num(s["tokens_per_s"], 0)]
    return header, rows


def group_table(summary: Mapping[str, Any], key: str) -> tuple[list[str], list[list[str]]]:
    """Accuracy per group (rows) and model (columns) for one breakdown key."""
    labels = list(summary["models"])
    groups = sorted({g for s in summary["models"].values() for g in s[key]}, key=group_order)
    rows = [[g] + [_pct(summary["models"][m][key].get(g, math.nan)) for m in labels] for g in groups]
    return ["group", *labels], rows


def flip_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["models", "wrong→right", "right→wrong", "net", "both right", "both wrong"]
    rows = [[f"{f['from']} → {f['to']}", str(f["wrong_to_right_count"]), str(f["right_to_wrong_count"]), f"{f['net']:+d}",
             str(f["both_right_count"]), str(f["both_wrong_count"])] for f in summary["flips"]]
    return header, rows


def terminal_tables(summary: Mapping[str, Any]) -> list[Any]:
    """Rich tables: models side by side (quality, then cost), accuracy by the leading breakdown, flips."""
    from rich import box
    from rich.table import Table

    def make(title: str, header: list[str], rows: list[list[str]]) -> Table:
        # Light borders and unwrapped numbers, so the tables read well in an 80-column terminal.
        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
        for i, h in enumerate(header):
            t.add_column(h, justify="left" if i == 0 else "right", no_wrap=i > 0)
        for r in rows:
            t.add_row(*r)
        return t

    from rftcli.eval_grid import grid_tables

    samples = summary["samples"]
    how = "greedy" if samples == 1 else f"{samples} samples at temperature {summary['temperature']:g}"
    tables = [make(title, header, rows) for title, header, rows in grid_tables(summary)]
    where = (f" (set {next(iter(summary['sets']))}, prompt {next(iter(summary['prompts']))})"
             if grid_tables(summary) else "")
    tables += [make(f"eval on split {summary['split']}, {how}{where}", *side_by_side(summary, "quality")),
              make("response length and speed", *side_by_side(summary, "cost"))]
    key, title = _breakdown(summary)
    header, rows = group_table(summary, key)
    if len(rows) > 1:
        tables.append(make(f"accuracy by {title}", header, rows))
    if summary["flips"]:
        tables.append(make("flips between consecutive models (per prompt, majority answer)", *flip_table(summary)))
    return tables


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- charts

def _matplotlib() -> Any | None:
    """matplotlib's Figure class, or None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def _plot_accuracy(Figure, summary: Mapping[str, Any], key: str, title: str, path: Path) -> None:
    labels = list(summary["models"])
    groups = ["all"] + sorted({g for s in summary["models"].values() for g in s[key]}, key=group_order)
    fig = Figure(figsize=(max(5.0, 2.0 + 0.45 * len(groups) * len(labels)), 3.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        s = summary["models"][label]
        ys = [s["accuracy"]] + [s[key].get(g, math.nan) for g in groups[1:]]
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(groups))]
        bars = ax.bar(xs, ys, width=width, label=label)
        if len(groups) * len(labels) <= 24:
            ax.bar_label(bars, labels=[_pct(y) for y in ys], fontsize="x-small", padding=1)
    ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 6 else 0)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy")
    ax.set_title(f"accuracy overall and by {title}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=110)


def lengths_figure(Figure, lengths: Mapping[str, Sequence[int]], limit: int):
    """Response lengths: one histogram panel per model over a shared x axis, so no model's bars hide
    another's (models that answer alike have near-identical histograms)."""
    labels = list(lengths)
    fig = Figure(figsize=(6.0, 1.0 + 1.3 * len(labels)), layout="constrained")
    axes = fig.subplots(len(labels), 1, sharex=True, squeeze=False)[:, 0]
    top = max([limit] + [max(v) for v in lengths.values() if v])
    bins = list(range(0, top + 2, max(1, (top + 1) // 40)))
    colors = [f"C{i}" for i in range(len(labels))]
    for ax, label, color in zip(axes, labels, colors, strict=True):
        ax.hist(lengths[label], bins=bins, color=color, alpha=0.8)
        ax.axvline(limit, color="grey", linestyle="--", linewidth=1)
        ax.set_title(label, fontsize="small", loc="left")
        ax.set_ylabel("responses", fontsize="small")
    axes[-1].set_xlabel(f"response tokens (dashed: max_new_tokens {limit})")
    fig.suptitle("response length")
    return fig


def training_panels(curves: Mapping[str, Mapping[str, list[tuple[float, float]]]]) -> list[tuple[str, list[str]]]:
    """The panels of training.png: (title, runs drawn in it). Reward and KL are shared by the runs that log
    them; KL gets a panel whenever a run logs rewards (a GRPO run), empty when none logs KL; each run's loss
    has a panel of its own, since an SFT loss (cross-entropy) and a GRPO loss (near 0) share no scale."""
    panels = []
    rewarded = [label for label, c in curves.items() if "reward" in c]
    if rewarded:
        panels.append(("reward", rewarded))
    with_kl = [label for label, c in curves.items() if "kl" in c]
    if with_kl or rewarded:
        panels.append(("kl", with_kl))
    panels += [(f"loss: {label}", [label]) for label, c in curves.items() if "loss" in c]
    return panels


KL_OFF = "KL not logged:\ntrained with --beta 0\n(no KL term)"


def training_figure(Figure, curves: Mapping[str, Mapping[str, list[tuple[float, float]]]]):
    """training.png: see `training_panels`; an empty KL panel says that KL was off."""
    panels = training_panels(curves)
    colors = {label: f"C{i}" for i, label in enumerate(curves)}
    fig = Figure(figsize=(3.6 * len(panels), 3.2), layout="constrained")
    for i, (title, runs) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        key = title.split(":")[0]
        for label in runs:
            xs, ys = zip(*curves[label][key], strict=True)
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label, color=colors[label])
        if not runs:
            ax.text(0.5, 0.5, KL_OFF, ha="center", va="center", transform=ax.transAxes, color="grey")
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.set_xlabel("step")
            if key != "loss":
                ax.legend(fontsize="small")
        ax.set_title(title)
    return fig


# ---------------------------------------------------------------- report.md

def write_report(folder: Path, summary: Mapping[str, Any], lengths: Mapping[str, Sequence[int]],
                 metrics: Sequence[Path] = ()) -> dict[str, Any]:
    """Write report.md (and the charts, given matplotlib) into `folder`. Returns what was written."""
    folder = Path(folder)
    curves = {label: read_training_metrics(p) for label, p in zip(metrics_labels(metrics), metrics, strict=True)}
    Figure = _matplotlib()
    charts: list[str] = []
    key, title = _breakdown(summary)
    if Figure is not None:
        _plot_accuracy(Figure, summary, key, title, folder / "accuracy.png")
        lengths_figure(Figure, lengths, summary["max_new_tokens"]).savefig(folder / "lengths.png", dpi=110)
        charts += ["accuracy.png", "lengths.png"]
        if any(curves.values()):
            training_figure(Figure, curves).savefig(folder / "training.png", dpi=110)
            charts.append("training.png")

    samples = summary["samples"]
    how = "greedy decoding" if samples == 1 else (f"{samples} samples per prompt at temperature "
                                                  f"{summary['temperature']:g}, top_p {summary['top_p']:g}")
    first = next(iter(summary["models"].values()))
    md = ["# Evaluation report", "",
          f"Dataset `{summary['dataset']}`, split `{summary['split']}`: {first['prompts']} prompts, {how}, "
          f"at most {summary['max_new_tokens']} new tokens" + (f", preset `{summary['preset']}`" if summary["preset"]
                                                                else "") + "."
          + (f" The preset left out {summary['skipped_rows']} rows it does not score." if summary.get("skipped_rows")
             else ""),
          f"Correct means reward `{summary['scorer']}` = 1. Per-row results: `results.parquet`; "
          "every number here: `summary.json`.", ""]
    if Figure is None:
        md += [f"*Charts skipped: matplotlib is not installed (`{INSTALL_HINT}`).*", ""]
    md += ["## Models", "", _md_table(*side_by_side(summary)), ""]
    if samples > 1:
        ks = list(first["pass_at_k"])
        md += [f"pass@k (unbiased estimator, {samples} samples) and maj@{samples} (majority vote on the answer):",
               "", _md_table(["model", *[f"pass@{k}" for k in ks], f"maj@{samples}"],
                             [[label, *[_pct(s["pass_at_k"][k]) for k in ks], _pct(s["maj_at_k"][str(samples)])]
                              for label, s in summary["models"].items()]), ""]
    md += [f"## Accuracy by {title}", "", _md_table(*group_table(summary, key)), ""]
    if "accuracy.png" in charts:
        md += ["![accuracy by group](accuracy.png)", ""]
    for other, name in (("accuracy_by_task", "task"), ("accuracy_by_answer_type", "answer type")):
        if other != key:
            md += [f"By {name}:", "", _md_table(*group_table(summary, other)), ""]
    from rftcli.eval_grid import grid_markdown

    grid_md, grid_charts = grid_markdown(summary, folder, Figure, _md_table)
    md += grid_md
    charts += grid_charts
    if summary["flips"]:
        md += ["## Flips", "", "Prompts whose answer changed from wrong to right (or back) between consecutive "
               "models; with several samples a prompt's answer is its majority vote. The ids are in "
               "`flips.json`.", "", _md_table(*flip_table(summary)), ""]
    md += ["## Response length", "", _md_table(
        ["model", "mean tokens", "p95 tokens", "truncated"],
        [[label, _num(s["mean_tokens"]), _num(s["p95_tokens"]), _pct(s["truncation_rate"])]
         for label, s in summary["models"].items()]), ""]
    if "lengths.png" in charts:
        md += ["![response lengths](lengths.png)", ""]
    if metrics:
        md += ["## Training", ""]
        rows = []
        for label, p in zip(curves, metrics, strict=True):
            c = curves[label]
            for k in TRAINING_KEYS:
                if k in c:
                    rows.append([label, k, str(len(c[k])), _num(c[k][0][1], 4), _num(c[k][-1][1], 4), f"`{p}`"])
        md += [_md_table(["run", "metric", "logged steps", "first", "last", "file"], rows) if rows else
               "The metrics files hold no reward, KL or loss entries.", ""]
        if any("reward" in c for c in curves.values()) and not any("kl" in c for c in curves.values()):
            md += ["No run logged KL: train-grpo ran with `--beta 0` (no KL term).", ""]
        if "training.png" in charts:
            md += ["![training curves](training.png)", ""]
    (folder / "report.md").write_text("\n".join(md))
    return {"report": "report.md", "charts": charts,
            "charts_skipped": None if Figure is not None else f"matplotlib is not installed ({INSTALL_HINT})"}
