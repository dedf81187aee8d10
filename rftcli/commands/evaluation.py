"""The eval command: models side by side on a dataset, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rftcli.commands.base import errors_as_messages, make_config, out_console, pct_or_dash, stage_defaults
from rftcli.limits import DEFAULT_MAX_PROMPT_LENGTH
from rftcli.options import (
    AllowPickleOpt,
    ConfigOpt,
    DtypeOpt,
    LimitOpt,
    MaxPixelsOpt,
    MaxPromptLengthOpt,
    MinPixelsOpt,
    OutOpt,
    OverwriteOpt,
    RemoteCodeOpt,
    SeedOpt,
)

# ---------------------------------------------------------------- eval
EV = stage_defaults("eval")


def eval_(
    ctx: typer.Context,
    dataset: Annotated[list[Path] | None, typer.Option(
        "--dataset", "-d", help="Evaluation set (dataset Parquet file), repeatable; the first leads the summary.")] = None,
    models: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model to evaluate, repeatable; the first is the baseline.")] = None,
    out: OutOpt = None,
    labels: Annotated[list[str] | None, typer.Option("--label", help="Name per --model, repeatable.")] = None,
    set_labels: Annotated[list[str] | None, typer.Option(
        "--set-label", help="Name per --dataset, repeatable (default: the file's stem).")] = None,
    prompts: Annotated[list[str] | None, typer.Option(
        "--prompt", help="Prompt variant, repeatable: dataset (as stored; the default), direct (direct-answer "
                         "control), think, or NAME=TEXT (your instruction; {question} makes it a template).")] = None,
    preset: Annotated[str | None, typer.Option(help="Benchmark preset: mathvista, geometry3k, clevr-count, refcoco.")] = None,
    split: Annotated[str | None, typer.Option("--split", help="Dataset split, or all (default: test; presets: all).")] = None,
    samples: Annotated[int, typer.Option("--samples", "-k", help="Completions per prompt: 1 greedy; k > 1 gives pass@k and maj@k.")] = EV.samples,
    temperature: Annotated[float, typer.Option(help="Sampling temperature when --samples > 1.")] = EV.temperature,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling when --samples > 1 (1 = off).")] = EV.top_p,
    max_new_tokens: Annotated[int | None, typer.Option(help="Most tokens per answer (default 64; presets more).")] = None,
    max_prompt_length: MaxPromptLengthOpt = DEFAULT_MAX_PROMPT_LENGTH,
    max_pixels: MaxPixelsOpt = None,
    min_pixels: MinPixelsOpt = None,
    scorer: Annotated[str | None, typer.Option(help="Reward whose 1.0 marks a correct answer (default accuracy).")] = None,
    rewards: Annotated[list[str] | None, typer.Option(
        "--reward", "-r", help="Further reward reported by its mean, repeatable: built-in, pkg.module:fn or file.py:fn.")] = None,
    category_key: Annotated[str | None, typer.Option(
        help="Column or metadata field for accuracy by category (metadata.NAME: the metadata field).")] = None,
    metrics: Annotated[list[Path] | None, typer.Option("--metrics", help="Training metrics.jsonl for reward/KL curves, repeatable.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call (halved on out-of-memory).")] = EV.batch_size,
    limit: LimitOpt = None,
    dtype: DtypeOpt = EV.dtype,
    trust_remote_code: RemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
    seed: SeedOpt = EV.seed,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Evaluate models side by side -> results.parquet, summary.json, flips.json, report.md (+ charts).

    Greedy, or --samples k for pass@k and maj@k; --preset for MathVista, Geometry3K, CLEVR counting or
    RefCOCO data converted by prepare-data. Several -d sets and --prompt variants give one grid of
    models x sets x prompts. Rerun a killed eval with the same settings to resume it.

    Example: rftcli eval -d data/counting.parquet -m builtin:small-qwen2.5-vl -m out/sft -m out/grpo --out out/eval
    """
    from rftcli.report import terminal_tables
    from rftcli.stages import eval as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    for table in terminal_tables(result.summary):
        out_console.print(table)
    rule = result.summary.get("accuracy_rule")
    if rule:
        out_console.print(f"correct = reward {rule['correct']} = 1 (the headline accuracy); strict / lenient accuracy: "
                          + ", ".join(f"{k} {pct_or_dash(rule['strict'][k])} / {pct_or_dash(rule['lenient'][k])}"
                                      for k in rule["strict"]))
    from rftcli.contamination import warning

    sets = list(result.summary["sets"])
    for name in sets:  # contamination is a property of the rows: per set, under the first prompt
        cells = {c["model"]: c for c in result.summary["grid"]
                 if c["set"] == name and c["prompt"] == next(iter(result.summary["prompts"]))}
        where = f" (set {name})" if len(sets) > 1 else ""
        out_console.print(f"evaluated rows seen in training{where}: " + ", ".join(
            f"{label} {c['contamination']['trained_rows']}" if c["contamination"]["recorded"] else f"{label} 0 (no record)"
            for label, c in cells.items()), highlight=False, soft_wrap=True)
        for label, c in cells.items():
            if line := warning(label + where, c):
                out_console.print(line, style="yellow", highlight=False, soft_wrap=True)
    resumed = [label for label, s in result.summary["models"].items() if s["resumed"]]
    if resumed:
        out_console.print(f"resumed: reused finished prompts of {', '.join(resumed)} from the work folder")
    if result.images_shrunk:
        out_console.print(f"images shrunk to the pixel budget: {result.images_shrunk}")
    skipped = result.summary["report"]["charts_skipped"]
    out_console.print(f"report: {result.path / 'report.md'}" + (f" (charts skipped: {skipped})" if skipped else ""))
