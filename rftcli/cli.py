"""The `rftcli` command: a thin Typer layer. Each command builds its stage's frozen config (defaults <
`--config` YAML < flags), calls the stage's `run`, and prints a rich summary. Heavy libraries are
imported inside commands so `rftcli --help` stays instant.

Exit codes: 0 success; 2 bad usage, settings or input data, an existing output without --overwrite or an
output folder that cannot be written (one-line `error:` on stderr naming the file, row and column); 1 a
full disk (one line naming the output and how to continue) or an internal failure (one line; `rftcli
--debug ...` shows the traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rftcli import __version__
from rftcli.commands import data, machine, sampling, training
from rftcli.commands.base import DEBUG, errors_as_messages, fail, make_config, out_console  # noqa: F401
from rftcli.commands.base import pct_or_dash as _pct_or_dash
from rftcli.commands.base import stage_defaults as _defaults
from rftcli.limits import DEFAULT_MAX_PROMPT_LENGTH
from rftcli.options import (
    AllowPickleOpt,
    ConfigOpt,
    DatasetOpt,
    DtypeOpt,
    LimitOpt,
    MaxPixelsOpt,
    MaxPromptLengthOpt,
    MinPixelsOpt,
    ModelOpt,
    OutOpt,
    OverwriteOpt,
    RemoteCodeOpt,
    SeedOpt,
    SplitOpt,
)

app = typer.Typer(help="Reinforcement fine-tuning of vision-language models, one stage per command.\n\n"
                       "Stages read and write files: dataset -> sft-coldstart -> rollout -> score -> train-grpo "
                       "-> merge -> eval.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        print(f"rftcli {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
         debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of failures.")] = False) -> None:
    """rftcli"""
    DEBUG["on"] = debug
    _quiet_libraries()


def _quiet_libraries() -> None:
    """Silence library chatter that is not about the user's run."""
    import logging
    import warnings

    from rftcli.processor_compat import quiet_loading_notices

    # bitsandbytes' optional-kernel notice, DeepSpeed's "Setting accelerator to CPU", a deprecation PEFT triggers.
    quiet_loading_notices()
    # TRL prints a row whose rewards all abstained in full (its prompt, images, completion); rftcli has logged
    # each failing reward with its row number already.
    logging.getLogger("trl.trainer.grpo_trainer").addFilter(
        lambda record: not record.getMessage().startswith("All reward functions returned None"))
    # Deprecation notices addressed to library developers (renamed arguments inside transformers/peft).
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|trl)\.")


# The commands, in the order `rftcli --help` lists them; their bodies live in rftcli.commands.
app.command("prepare-data")(data.prepare_data)
app.command("sft-coldstart")(training.sft_coldstart)
app.command("rollout")(sampling.rollout)
app.command("score")(sampling.score)
app.command("check-rewards")(data.check_rewards)
app.command("train-grpo")(training.train_grpo)
app.command("merge")(training.merge)


# ---------------------------------------------------------------- eval
EV = _defaults("eval")


@app.command("eval")
def eval_(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    models: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model to evaluate, repeatable; the first is the baseline.")] = None,
    out: OutOpt = None,
    labels: Annotated[list[str] | None, typer.Option("--label", help="Name per --model, repeatable.")] = None,
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
    RefCOCO data converted by prepare-data. Rerun a killed eval with the same settings to resume it.

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
                          + ", ".join(f"{k} {_pct_or_dash(rule['strict'][k])} / {_pct_or_dash(rule['lenient'][k])}"
                                      for k in rule["strict"]))
    from rftcli.contamination import warning

    models = result.summary["models"]
    out_console.print("evaluated rows seen in training: " + ", ".join(
        f"{label} {s['contamination']['trained_rows']}" if s["contamination"]["recorded"] else f"{label} 0 (no record)"
        for label, s in models.items()), highlight=False, soft_wrap=True)
    for label, s in models.items():
        if line := warning(label, s):
            out_console.print(line, style="yellow", highlight=False, soft_wrap=True)
    resumed = [label for label, s in result.summary["models"].items() if s["resumed"]]
    if resumed:
        out_console.print(f"resumed: reused finished prompts of {', '.join(resumed)} from the work folder")
    if result.images_shrunk:
        out_console.print(f"images shrunk to the pixel budget: {result.images_shrunk}")
    skipped = result.summary["report"]["charts_skipped"]
    out_console.print(f"report: {result.path / 'report.md'}" + (f" (charts skipped: {skipped})" if skipped else ""))


# ---------------------------------------------------------------- doctor
@app.command("plan")
def plan(
    model: ModelOpt = None,
    dataset: Annotated[Path | None, typer.Option(
        "--dataset", "-d", help="Table whose worst-case sample to plan for (default: the budgets).")] = None,
    split: SplitOpt = "train",
    limit: LimitOpt = None,
    stage: Annotated[str, typer.Option(help="train-grpo, train-grpo-offline, sft-coldstart or rollout.")] = "train-grpo",
    batch_size: Annotated[int, typer.Option(help="Sequences per device per step.")] = 8,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
    num_generations: Annotated[int, typer.Option("--num-generations", "-n", help="Completions per prompt (G).")] = 4,
    max_completion_length: Annotated[int, typer.Option(help="Most tokens per completion (SFT: per target).")] = 64,
    max_prompt_length: MaxPromptLengthOpt = DEFAULT_MAX_PROMPT_LENGTH,
    max_pixels: MaxPixelsOpt = None,
    min_pixels: MinPixelsOpt = None,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    lora_vision: Annotated[bool, typer.Option(help="Also adapt the vision tower.")] = False,
    target_modules: Annotated[str | None, typer.Option(help="Adapted linear layers, comma-separated.")] = None,
    full: Annotated[bool, typer.Option(help="Train all weights instead of a LoRA adapter.")] = False,
    load_in_4bit: Annotated[bool, typer.Option(help="QLoRA: 4-bit NF4 base, double quantization.")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade compute for memory.")] = False,
    gpu_memory: Annotated[float | None, typer.Option(help="Device memory in GiB: say whether the run fits and what "
                                                          "makes it fit.")] = None,
) -> None:
    """Predicted peak accelerator memory of a run, by part, from the model's config.json alone (no weights).

    Example: rftcli plan -m Qwen/Qwen2.5-VL-3B-Instruct -d data/counting.parquet -n 8 --gpu-memory 24
    """
    from rftcli import plan as lib

    if model is None:
        fail("missing --model")
    with errors_as_messages():
        settings = lib.Settings(
            stage=stage, batch_size=batch_size, grad_accum=grad_accum, num_generations=num_generations,
            max_completion_length=max_completion_length, max_prompt_length=max_prompt_length,
            max_pixels=max_pixels or lib.Settings.max_pixels, min_pixels=min_pixels or lib.DEFAULT_MIN_PIXELS,
            lora_r=lora_r, lora_vision=lora_vision, target_modules=target_modules, full=full,
            load_in_4bit=load_in_4bit, gradient_checkpointing=gradient_checkpointing)
        result = lib.plan_run(model, settings, dataset, split, limit)
    gib = lib.GIB
    table = Table(title=f"{model}: predicted peak {result.peak / gib:.2f} GiB ({stage}, worst case: "
                        f"{result.sample.source})")
    for column in ("part", "GiB", "note"):
        table.add_column(column, justify="right" if column == "GiB" else "left")
    for part, size, note in result.parts:
        table.add_row(part, f"{size / gib:.2f}", note)
    table.add_row("peak", f"{result.peak / gib:.2f}", "weights + LoRA + optimizer + max(training, generation) phase")
    table.add_row("tokens per optimizer step", f"{result.tokens_per_step:,}",
                  f"{result.sample.prompt_tokens:,} prompt + {result.settings.max_completion_length:,} completion "
                  "tokens per sequence")
    out_console.print(table)
    if gpu_memory is not None:
        verdict = "fits" if result.fits(gpu_memory) else "does not fit"
        fixes = Table(title=f"on {gpu_memory:g} GiB: the run {verdict}" +
                            ("" if result.fits(gpu_memory) else "; these settings change that:"))
        for column in ("change", "GiB", "fits"):
            fixes.add_column(column)
        for label, changed in lib.fixes(lib.read_model_config(model), result, gpu_memory):
            fixes.add_row(label, f"{changed.peak / gib:.2f}", "yes" if changed.fits(gpu_memory) else "no")
        out_console.print(fixes)


app.command("doctor")(machine.doctor)


def run() -> None:  # pragma: no cover - console entry for `python -m rftcli`
    app(prog_name="rftcli", args=sys.argv[1:])
