"""Command-line options that several commands share, each declared once.

A group is a list of (parameter name, annotated type, default); `with_options(*groups)` appends a group's
options to a Typer command's own parameters, and the command receives them in `**options`. Defaults come
from the stage's config (`rftcli.config.defaults`), so each command shows its own stage's default.

    training(defaults)  LoRA, QLoRA and the optimizer, checkpoints and logging: sft-coldstart, train-grpo

Single options shared by several commands are annotated types (`OutOpt`, `ConfigOpt`, `SeedOpt`, ...), spelled
the same in every command.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

Group = list[tuple[str, Any, Any]]

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file of settings; flags given here win.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output path.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Use only the first N rows/prompts.")]
DatasetOpt = Annotated[Path | None, typer.Option("--dataset", "-d", help="Input dataset Parquet file.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Hub id, local folder or builtin:NAME.")]
SplitOpt = Annotated[str, typer.Option("--split", help="Dataset split to use.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.")]
RemoteCodeOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Allow model code from the checkpoint.")]
AllowPickleOpt = Annotated[bool, typer.Option(
    "--allow-pickle", help="Load weights stored only as pickle files (.bin/.pt), which can run code; off: safetensors only.")]
RewardOpt = Annotated[list[str] | None, typer.Option(
    "--reward", "-r", help="NAME[=WEIGHT], repeatable; NAME is built-in, pkg.module:fn or file.py:fn.")]
MaxPromptLengthOpt = Annotated[int, typer.Option(
    "--max-prompt-length", help="Most tokens a prompt may have, text and images (capped at the model's context "
    "length); a longer one is refused, naming its row, before weights load.")]
MaxPixelsOpt = Annotated[int | None, typer.Option(
    "--max-pixels", help="Shrink images above this many pixels before use (default: the processor's limit, at most "
    "1003520).")]
MinPixelsOpt = Annotated[int | None, typer.Option(
    "--min-pixels", help="The processor enlarges images below this many pixels (default: its own).")]


def with_options(*groups: Group) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options of `groups` after a command's own parameters (Typer reads the signature)."""
    def add(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)
                  for group in groups for name, kind, default in group]
        command.__signature__ = signature.replace(parameters=own + shared)
        return command
    return add


def training(d: Any) -> Group:
    """LoRA/QLoRA, optimizer, checkpoint and logging options of a training stage whose config defaults are `d`."""
    return [
        ("full", Annotated[bool, typer.Option(help="Train all weights instead of a LoRA adapter.")], d.full),
        ("lora_r", Annotated[int, typer.Option(help="LoRA rank.")], d.lora_r),
        ("lora_alpha", Annotated[int, typer.Option(help="LoRA alpha.")], d.lora_alpha),
        ("lora_dropout", Annotated[float, typer.Option(help="LoRA dropout.")], d.lora_dropout),
        ("lora_vision", Annotated[bool, typer.Option(help="Also adapt the vision tower and projector.")],
         d.lora_vision),
        ("target_modules", Annotated[str | None, typer.Option(
            help="Adapt only these linear layers, comma-separated (e.g. q_proj,v_proj); default: all of the "
                 "language model's.")], None),
        ("load_in_4bit", Annotated[bool, typer.Option(help="QLoRA: 4-bit NF4 base, double quantization.")],
         d.load_in_4bit),
        ("learning_rate", Annotated[float, typer.Option("--lr", help="Peak learning rate.")], d.learning_rate),
        ("lr_scheduler", Annotated[str, typer.Option(help="Learning-rate schedule.")], d.lr_scheduler),
        ("warmup_ratio", Annotated[float, typer.Option(help="Share of steps spent warming up.")], d.warmup_ratio),
        ("max_steps", Annotated[int, typer.Option(help="Optimizer steps (-1: use --epochs).")], d.max_steps),
        ("grad_accum", Annotated[int, typer.Option(help="Gradient accumulation steps.")], d.grad_accum),
        ("gradient_checkpointing", Annotated[bool, typer.Option(help="Trade compute for memory.")], False),
        ("save_steps", Annotated[int | None, typer.Option(help="Checkpoint every N steps into OUT.work/.")], None),
        ("save_total_limit", Annotated[int | None, typer.Option(help="Checkpoints kept in OUT.work/.")],
         d.save_total_limit),
        ("resume", Annotated[bool, typer.Option(help="Continue the interrupted run in OUT.work/ (same settings).")],
         False),
        ("logging_steps", Annotated[int, typer.Option(help="Log every N steps.")], d.logging_steps),
        ("report_to", Annotated[str, typer.Option(help="none, tensorboard or wandb.")], d.report_to),
        ("gpu_memory", Annotated[float | None, typer.Option(
            help="Device memory in GiB to plan against before loading weights (default: the GPU's).")], None),
        ("preflight", Annotated[bool, typer.Option(
            "--preflight/--no-preflight", help="Stop before loading weights when the plan says the run cannot fit.")],
         True),
    ]
