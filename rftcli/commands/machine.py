"""Commands about the machine: plan predicts a run's peak accelerator memory, doctor reports what is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rftcli.commands.base import errors_as_messages, fail, out_console, summary_table
from rftcli.limits import DEFAULT_MAX_PROMPT_LENGTH
from rftcli.options import LimitOpt, MaxPixelsOpt, MaxPromptLengthOpt, MinPixelsOpt, ModelOpt, SplitOpt


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


def doctor(
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Versions, devices, 4-bit/vLLM/torchvision status and what rftcli would use here: paste it in bug reports.

    Example: rftcli doctor --json > doctor.json
    """
    import json

    from rftcli import doctor as lib

    with errors_as_messages():
        info = lib.report()
    if json_out:
        print(json.dumps(info, indent=2))
        return
    out_console.print(summary_table("rftcli doctor", lib.rows(info)))
