"""The `rftcli` command: a thin Typer layer. Each command builds its stage's frozen config (defaults <
`--config` YAML < flags), calls the stage's `run`, and prints a rich summary. Heavy libraries are
imported inside commands so `rftcli --help` stays instant.

Exit codes: 0 success; 2 bad usage, settings or input data (one-line `error:` on stderr naming the file,
row and column); 1 an internal failure (one line; `rftcli --debug ...` shows the traceback).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from rftcli import __version__
from rftcli.config import build_config

app = typer.Typer(help="Reinforcement fine-tuning of vision-language models, one stage per command.\n\n"
                       "Stages read and write files: dataset -> sft-coldstart -> rollout -> score -> train-grpo "
                       "-> merge -> eval.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
console = Console(stderr=True)
out_console = Console()

# Shared options, spelled the same in every command.
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML file of settings; flags given here win.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output path.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Use only the first N rows/prompts.")]
DatasetOpt = Annotated[Optional[Path], typer.Option("--dataset", "-d", help="Input dataset Parquet file.")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Hub id, local folder or builtin:NAME.")]
SplitOpt = Annotated[str, typer.Option("--split", help="Dataset split to use.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.")]
RemoteCodeOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Allow model code from the checkpoint.")]
RewardOpt = Annotated[Optional[list[str]], typer.Option(
    "--reward", "-r", help="NAME[=WEIGHT], repeatable; NAME is built-in, pkg.module:fn or file.py:fn.")]


def _version(value: bool) -> None:
    if value:
        print(f"rftcli {__version__}")
        raise typer.Exit()


_DEBUG = {"on": False}


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
         debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of failures.")] = False) -> None:
    """rftcli"""
    _DEBUG["on"] = debug
    _quiet_libraries()


def _quiet_libraries() -> None:
    """Silence library chatter that is not about the user's run."""
    import logging
    import warnings

    # bitsandbytes on CPUs with AVX512-BF16 looks for an optional kernel package and warns when absent.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # Deprecation notices addressed to library developers (renamed arguments inside transformers/peft).
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|trl)\.")


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


@contextmanager
def errors_as_messages() -> Iterator[None]:
    """Bad input, settings or an existing output: one line, exit 2. Anything else is internal: one
    line, exit 1, and the traceback with --debug."""
    try:
        yield
    except typer.Exit:
        raise
    except (ValueError, FileExistsError, FileNotFoundError, ImportError) as err:
        if _DEBUG["on"]:
            raise
        fail(_first_line(err), code=2)
    except Exception as err:
        if _DEBUG["on"]:
            raise
        fail(f"internal error ({type(err).__name__}): {_first_line(err)}; rerun with --debug for the traceback",
             code=1)


def make_config(ctx: typer.Context, cls: type, config_path: Path | None, params: dict[str, Any],
                renames: dict[str, str] | None = None) -> Any:
    """Build `cls` from its defaults, the YAML file, and the flags actually given on the command line."""
    renames = renames or {}
    flags = {}
    for name, value in params.items():
        if name in ("ctx", "config", "stage"):
            continue
        source = ctx.get_parameter_source(name)
        # Compared by name: typer may carry its own copy of click's ParameterSource enum.
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            if isinstance(value, list):
                value = tuple(value)
            flags[renames.get(name, name)] = value
    with errors_as_messages():
        try:
            return build_config(cls, config_path, flags)
        except TypeError as err:
            missing = re.findall(r"'(\w+)'", str(err)) if "required" in str(err) else []
            if not missing:
                raise
            fail(f"missing {', '.join('--' + m.replace('_', '-') for m in missing)} (a flag or a --config setting)")


def _defaults(module: str):
    from importlib import import_module

    from rftcli.config import defaults

    return defaults(import_module(f"rftcli.stages.{module}").Config)


def _table(title: str, rows: list[tuple[str, Any]]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    for k, v in rows:
        t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    return t


# ---------------------------------------------------------------- prepare-data
PD = _defaults("prepare_data")


@app.command("prepare-data")
def prepare_data(
    ctx: typer.Context,
    out: OutOpt = None,
    task: Annotated[Optional[str], typer.Option(help="Built-in synthetic task: counting.")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="JSONL or Parquet file to convert.")] = None,
    num: Annotated[int, typer.Option(help="Rows to generate for --task.")] = PD.num,
    task_options: Annotated[Optional[list[str]], typer.Option(
        "--task-option", help="Task knob key=value, repeatable (counting: image_size, max_count, distractors).")] = None,
    map: Annotated[Optional[list[str]], typer.Option("--map", help="Rename input column src=dst, repeatable.")] = None,
    instruction: Annotated[Optional[str], typer.Option(help="Instruction appended to prompts ('' for none).")] = None,
    test_fraction: Annotated[float, typer.Option(help="Share of rows in the test split.")] = PD.test_fraction,
    val_fraction: Annotated[float, typer.Option(help="Share of rows in the val split.")] = PD.val_fraction,
    limit: LimitOpt = None,
    seed: SeedOpt = PD.seed,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Make a dataset Parquet from a built-in task or a JSONL/Parquet file.

    Example: rftcli prepare-data --task counting --num 2000 --out data/counting.parquet
    """
    from rftcli.stages import prepare_data as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    out_console.print(_table(f"dataset {result.path}", [("rows", result.rows), *sorted(result.splits.items())]))


# ---------------------------------------------------------------- sft-coldstart
SF = _defaults("sft_coldstart")


@app.command("sft-coldstart")
def sft_coldstart(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    model: ModelOpt = None,
    out: OutOpt = None,
    split: SplitOpt = SF.split,
    full: Annotated[bool, typer.Option(help="Train all weights instead of a LoRA adapter.")] = SF.full,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = SF.lora_r,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = SF.lora_alpha,
    lora_vision: Annotated[bool, typer.Option(help="Also adapt the vision tower.")] = SF.lora_vision,
    load_in_4bit: Annotated[bool, typer.Option(help="QLoRA: 4-bit NF4 base.")] = SF.load_in_4bit,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = SF.learning_rate,
    lr_scheduler: Annotated[str, typer.Option(help="Learning-rate schedule.")] = SF.lr_scheduler,
    epochs: Annotated[float, typer.Option(help="Passes over the data.")] = SF.epochs,
    max_steps: Annotated[int, typer.Option(help="Optimizer steps (-1: use --epochs).")] = SF.max_steps,
    batch_size: Annotated[int, typer.Option(help="Sequences per device per step.")] = SF.batch_size,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = SF.grad_accum,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade compute for memory.")] = False,
    logging_steps: Annotated[int, typer.Option(help="Log every N steps.")] = SF.logging_steps,
    report_to: Annotated[str, typer.Option(help="none, tensorboard or wandb.")] = SF.report_to,
    limit: LimitOpt = None,
    dtype: DtypeOpt = SF.dtype,
    trust_remote_code: RemoteCodeOpt = False,
    seed: SeedOpt = SF.seed,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Supervised cold start (TRL SFTTrainer, loss on the assistant turn) -> adapter or full model folder.

    Example: rftcli sft-coldstart -d data/counting.parquet -m builtin:small-qwen2.5-vl --out out/sft
    """
    from rftcli.stages import sft_coldstart as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    out_console.print(_table(f"checkpoint {result.path}", [("rows", result.rows), ("steps", result.steps),
                                                           ("train loss", result.train_loss)]))


# ---------------------------------------------------------------- rollout
RO = _defaults("rollout")


@app.command("rollout")
def rollout(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    model: ModelOpt = None,
    out: OutOpt = None,
    base: Annotated[Optional[str], typer.Option(help="Base of an adapter (default: from its manifest).")] = None,
    split: SplitOpt = RO.split,
    num_generations: Annotated[int, typer.Option("--num-generations", "-n", help="Completions per prompt (G).")] = RO.num_generations,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = RO.temperature,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling (1 = off).")] = RO.top_p,
    top_k: Annotated[int, typer.Option(help="Top-k sampling (0 = off).")] = RO.top_k,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens per completion.")] = RO.max_new_tokens,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call.")] = RO.batch_size,
    limit: LimitOpt = None,
    dtype: DtypeOpt = RO.dtype,
    trust_remote_code: RemoteCodeOpt = False,
    seed: SeedOpt = RO.seed,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Sample G completions per prompt with their per-token log-probs -> rollouts Parquet.

    Example: rftcli rollout -d data/counting.parquet -m out/sft -n 8 --out out/rollouts.parquet
    """
    from rftcli.stages import rollout as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    out_console.print(_table(f"rollouts {result.path}", [("prompts", result.prompts), ("rows", result.rows),
                                                         ("mean tokens", result.mean_tokens),
                                                         *sorted(result.finish_reasons.items())]))


# ---------------------------------------------------------------- score
@app.command("score")
def score(
    ctx: typer.Context,
    rollouts: Annotated[Optional[Path], typer.Option("--rollouts", help="Input rollouts Parquet file.")] = None,
    out: OutOpt = None,
    rewards: RewardOpt = None,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Apply reward functions to rollouts -> scores Parquet with reward_<name> columns and a total.

    Example: rftcli score --rollouts out/rollouts.parquet -r accuracy=1 -r format=0.2 --out out/scores.parquet
    """
    from rftcli.stages import score as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    rows = [("rows", result.rows), ("groups", result.groups)]
    rows += [(f"mean {k}", v) for k, v in result.mean.items()]
    rows += [("zero-variance groups", result.zero_variance_groups)]
    rows += [(f"errors {k}", v) for k, v in result.errors.items()]
    out_console.print(_table(f"scores {result.path}", rows))


# ---------------------------------------------------------------- train-grpo
TG = _defaults("train_grpo")


@app.command("train-grpo")
def train_grpo(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    model: ModelOpt = None,
    out: OutOpt = None,
    split: SplitOpt = TG.split,
    rewards: RewardOpt = None,
    num_generations: Annotated[int, typer.Option("--num-generations", "-n", help="Group size G.")] = TG.num_generations,
    max_completion_length: Annotated[int, typer.Option(help="Most tokens per completion.")] = TG.max_completion_length,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = TG.temperature,
    beta: Annotated[float, typer.Option(help="KL coefficient (0: no reference model).")] = TG.beta,
    epsilon: Annotated[float, typer.Option(help="Lower clip range.")] = TG.epsilon,
    epsilon_high: Annotated[Optional[float], typer.Option(help="Upper clip range (DAPO clip-higher).")] = None,
    loss_type: Annotated[str, typer.Option(help="grpo, dr_grpo, dapo, bnpo, cispo, sapo.")] = TG.loss_type,
    scale_rewards: Annotated[str, typer.Option(help="group, batch or none.")] = TG.scale_rewards,
    num_iterations: Annotated[int, typer.Option(help="Updates per generated batch.")] = TG.num_iterations,
    full: Annotated[bool, typer.Option(help="Train all weights instead of LoRA.")] = TG.full,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = TG.lora_r,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = TG.lora_alpha,
    lora_vision: Annotated[bool, typer.Option(help="Also adapt the vision tower.")] = TG.lora_vision,
    load_in_4bit: Annotated[bool, typer.Option(help="QLoRA: 4-bit NF4 base.")] = TG.load_in_4bit,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = TG.learning_rate,
    lr_scheduler: Annotated[str, typer.Option(help="Learning-rate schedule.")] = TG.lr_scheduler,
    epochs: Annotated[float, typer.Option(help="Passes over the prompts.")] = TG.epochs,
    max_steps: Annotated[int, typer.Option(help="Optimizer steps (-1: use --epochs).")] = TG.max_steps,
    batch_size: Annotated[int, typer.Option(help="Completions per device per step.")] = TG.batch_size,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = TG.grad_accum,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade compute for memory.")] = False,
    logging_steps: Annotated[int, typer.Option(help="Log every N steps.")] = TG.logging_steps,
    report_to: Annotated[str, typer.Option(help="none, tensorboard or wandb.")] = TG.report_to,
    limit: LimitOpt = None,
    dtype: DtypeOpt = TG.dtype,
    trust_remote_code: RemoteCodeOpt = False,
    seed: SeedOpt = TG.seed,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """GRPO with TRL's GRPOTrainer and rftcli's rewards -> adapter or full model folder.

    Example: rftcli train-grpo -d data/counting.parquet -m out/sft -r accuracy=1 -r format=0.2 --out out/grpo
    """
    from rftcli.stages import train_grpo as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    out_console.print(_table(f"checkpoint {result.path}", [("steps", result.steps), ("train loss", result.train_loss),
                                                           ("reward first log", result.reward_first),
                                                           ("reward last log", result.reward_last)]))


# ---------------------------------------------------------------- merge
MG = _defaults("merge")


@app.command("merge")
def merge(
    ctx: typer.Context,
    adapter: Annotated[Optional[Path], typer.Option("--adapter", "-a", help="Adapter folder to merge.")] = None,
    out: OutOpt = None,
    base: Annotated[Optional[str], typer.Option(help="Base model (default: from the adapter's manifest).")] = None,
    dtype: Annotated[str, typer.Option(help="Saved dtype: float32, bfloat16, float16.")] = MG.dtype,
    tolerance: Annotated[float, typer.Option(help="Largest allowed logit difference.")] = MG.tolerance,
    trust_remote_code: RemoteCodeOpt = False,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Merge a LoRA/QLoRA adapter into its full-precision base -> standalone model folder, verified.

    Example: rftcli merge --adapter out/grpo --out out/merged
    """
    from rftcli.stages import merge as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    out_console.print(_table(f"model {result.path}", [("base", result.base),
                                                      ("max |logit diff| vs adapter", result.max_logit_diff),
                                                      ("adapter's effect on logits", result.adapter_effect)]))


# ---------------------------------------------------------------- eval
EV = _defaults("eval")


@app.command("eval")
def eval_(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    models: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Model to evaluate, repeatable.")] = None,
    out: OutOpt = None,
    labels: Annotated[Optional[list[str]], typer.Option("--label", help="Name per --model, repeatable.")] = None,
    split: SplitOpt = EV.split,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = EV.max_new_tokens,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call.")] = EV.batch_size,
    limit: LimitOpt = None,
    dtype: DtypeOpt = EV.dtype,
    trust_remote_code: RemoteCodeOpt = False,
    seed: SeedOpt = EV.seed,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Evaluate one or more models (greedy) -> results.parquet + summary.json, and a side-by-side table.

    Example: rftcli eval -d data/counting.parquet -m builtin:small-qwen2.5-vl -m out/sft -m out/grpo --out out/eval
    """
    from rftcli.stages import eval as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    t = Table(title=f"eval on split {result.summary['split']} ({result.path})", title_justify="left")
    for col in ("model", "accuracy", "format", "mean tokens", "truncated", "tokens/s"):
        t.add_column(col)
    for label, s in result.summary["models"].items():
        t.add_row(label, f"{s['accuracy']:.3f}", f"{s['format_rate']:.3f}", f"{s['mean_tokens']:.1f}",
                  f"{s['truncation_rate']:.3f}", f"{s['tokens_per_s']:.0f}")
    out_console.print(t)


def run() -> None:  # pragma: no cover - console entry for `python -m rftcli`
    app(prog_name="rftcli", args=sys.argv[1:])
