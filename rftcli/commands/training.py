"""Commands that make model folders: sft-coldstart and train-grpo train an adapter or full model, merge folds
an adapter into its base. The two trainers share their LoRA, optimizer and checkpoint options
(`rftcli.options.training`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rftcli.commands.base import errors_as_messages, make_config, out_console, stage_defaults, summary_table
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
    RewardOpt,
    SeedOpt,
    SplitOpt,
    training,
    with_options,
)

# ---------------------------------------------------------------- sft-coldstart
SF = stage_defaults("sft_coldstart")


@with_options(training(SF))
def sft_coldstart(
    ctx: typer.Context,
    dataset: Annotated[Path | None, typer.Option(
        "--dataset", "-d", help="dataset Parquet, or rollouts/scores Parquet to distil (completions become targets).")] = None,
    model: ModelOpt = None,
    out: OutOpt = None,
    split: SplitOpt = SF.split,
    epochs: Annotated[float, typer.Option(help="Passes over the data.")] = SF.epochs,
    batch_size: Annotated[int, typer.Option(help="Sequences per device per step.")] = SF.batch_size,
    max_length: Annotated[int | None, typer.Option(help="Truncate sequences to N tokens.")] = None,
    max_prompt_length: MaxPromptLengthOpt = DEFAULT_MAX_PROMPT_LENGTH,
    max_pixels: MaxPixelsOpt = None,
    min_pixels: MinPixelsOpt = None,
    packing: Annotated[bool, typer.Option(
        help="Not supported: TRL does not pack vision-language data; refused.")] = False,
    min_reward: Annotated[float | None, typer.Option(
        help="Distil only completions with --reward-column >= this (scores input).")] = None,
    reward_column: Annotated[str, typer.Option(help="Column for --min-reward, e.g. reward_accuracy.")] = SF.reward_column,
    eval_split: Annotated[str | None, typer.Option(help="Split to report eval_loss on, e.g. val.")] = None,
    eval_dataset: Annotated[Path | None, typer.Option(help="Table of --eval-split (default: --dataset).")] = None,
    eval_steps: Annotated[int | None, typer.Option(help="Also evaluate every N steps.")] = None,
    limit: LimitOpt = None,
    dtype: DtypeOpt = SF.dtype,
    trust_remote_code: RemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
    seed: SeedOpt = SF.seed,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
    **options: Any,
) -> None:
    """Supervised cold start (TRL SFTTrainer, loss on the assistant turn) -> adapter or full model folder.

    Example: rftcli sft-coldstart -d data/counting.parquet -m builtin:small-qwen2.5-vl --out out/sft

    Distil from your own samples: rftcli sft-coldstart -d out/scores.parquet --min-reward 1
    --reward-column reward_accuracy -m MODEL --out out/sft-rs. With --save-steps N, a killed run
    continues with the same command plus --resume.
    """
    from rftcli.stages import sft_coldstart as stage

    cfg = make_config(ctx, stage.Config, config, {**locals(), **options})
    with errors_as_messages():
        result = stage.run(cfg)
    rows = [("rows", f"{result.rows} of {result.rows_read}" if result.rows != result.rows_read else result.rows),
            ("steps", result.steps), ("train loss", result.train_loss), ("images shrunk", result.images_shrunk)]
    if result.eval_loss is not None:
        rows.append(("eval loss", result.eval_loss))
    if result.resumed_from is not None:
        rows.append(("resumed from step", result.resumed_from))
    out_console.print(summary_table(f"checkpoint {result.path}", rows))


# ---------------------------------------------------------------- train-grpo
TG = stage_defaults("train_grpo")


@with_options(training(TG))
def train_grpo(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    model: ModelOpt = None,
    out: OutOpt = None,
    split: SplitOpt = TG.split,
    rewards: RewardOpt = None,
    num_generations: Annotated[int, typer.Option("--num-generations", "-n", help="Group size G.")] = TG.num_generations,
    max_completion_length: Annotated[int, typer.Option(help="Most tokens per completion.")] = TG.max_completion_length,
    max_prompt_length: MaxPromptLengthOpt = DEFAULT_MAX_PROMPT_LENGTH,
    max_pixels: MaxPixelsOpt = None,
    min_pixels: MinPixelsOpt = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = TG.temperature,
    beta: Annotated[float, typer.Option(help="KL coefficient (0: no reference model).")] = TG.beta,
    epsilon: Annotated[float, typer.Option(help="Lower clip range.")] = TG.epsilon,
    epsilon_high: Annotated[float | None, typer.Option(help="Upper clip range (DAPO clip-higher).")] = None,
    loss_type: Annotated[str, typer.Option(help="grpo, dr_grpo, dapo, bnpo, cispo, sapo.")] = TG.loss_type,
    scale_rewards: Annotated[str, typer.Option(help="group, batch or none.")] = TG.scale_rewards,
    num_iterations: Annotated[int, typer.Option(
        help="Updates per generated batch (offline: passes over the table).")] = TG.num_iterations,
    importance_sampling_level: Annotated[str, typer.Option(
        help="Importance ratio per token, or per sequence (GSPO).")] = TG.importance_sampling_level,
    mask_truncated_completions: Annotated[bool, typer.Option(
        help="Leave completions cut off at the length limit out of the loss (DAPO).")] = False,
    top_entropy_quantile: Annotated[float, typer.Option(
        help="Train only on this top share of tokens by entropy (1: all).")] = TG.top_entropy_quantile,
    rollouts: Annotated[Path | None, typer.Option(
        "--rollouts", help="Offline: a scores Parquet to update from instead of sampling (no --dataset).")] = None,
    dynamic_sampling: Annotated[bool, typer.Option(
        help="Offline: drop groups whose rewards do not vary (DAPO) and report how many.")] = False,
    allow_policy_mismatch: Annotated[bool, typer.Option(
        help="Offline: accept rollouts sampled from another checkpoint than --model.")] = False,
    use_vllm: Annotated[bool, typer.Option(help="Online: generate with vLLM (CUDA; not with --load-in-4bit).")] = False,
    vllm_mode: Annotated[str, typer.Option(help="colocate or server (a running `trl vllm-serve`).")] = TG.vllm_mode,
    epochs: Annotated[float, typer.Option(help="Passes over the prompts.")] = TG.epochs,
    batch_size: Annotated[int, typer.Option(help="Completions per device per step.")] = TG.batch_size,
    limit: LimitOpt = None,
    dtype: DtypeOpt = TG.dtype,
    trust_remote_code: RemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
    seed: SeedOpt = TG.seed,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
    **options: Any,
) -> None:
    """GRPO -> adapter or full model folder: online (TRL GRPOTrainer samples, rftcli's rewards score) or
    offline from a scores table (--rollouts).

    Example: rftcli train-grpo -d data/counting.parquet -m out/sft -r accuracy=1 -r format=0.2 --out out/grpo

    Offline, after rollout and score with the same model: rftcli train-grpo --rollouts out/scores.parquet
    -m out/sft --dynamic-sampling --out out/grpo. With --save-steps N, a killed run continues with the
    same command plus --resume; several GPUs: the same command under accelerate launch or torchrun.
    """
    from rftcli.stages import train_grpo as stage

    cfg = make_config(ctx, stage.Config, config, {**locals(), **options})
    with errors_as_messages():
        result = stage.run(cfg)
    rows = [("mode", result.mode), ("steps", result.steps), ("train loss", result.train_loss),
            ("reward first log", result.reward_first), ("reward last log", result.reward_last),
            ("images shrunk", result.images_shrunk)]
    if result.groups is not None:
        rows += [("groups", result.groups), ("dropped (zero variance)", result.dropped_groups)]
    if result.resumed_from is not None:
        rows.append(("resumed from step", result.resumed_from))
    out_console.print(summary_table(f"checkpoint {result.path}", rows))


# ---------------------------------------------------------------- merge
MG = stage_defaults("merge")


def merge(
    ctx: typer.Context,
    adapter: Annotated[Path | None, typer.Option("--adapter", "-a", help="Adapter folder to merge.")] = None,
    out: OutOpt = None,
    base: Annotated[str | None, typer.Option(help="Base model (default: from the adapter's manifest).")] = None,
    dtype: Annotated[str, typer.Option(help="Saved dtype: float32, bfloat16, float16.")] = MG.dtype,
    tolerance: Annotated[float, typer.Option(help="Largest allowed logit difference (merged vs adapter, saved vs "
                                                  "merged); above it nothing is written.")] = MG.tolerance,
    trust_remote_code: RemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Merge a LoRA/QLoRA adapter into its full-precision base -> standalone model folder, verified.

    Example: rftcli merge --adapter out/grpo --out out/merged

    The folder is laid out as transformers and vLLM load a Hub checkpoint (safetensors, processor, chat template).
    """
    from rftcli.stages import merge as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    rows = [("base", result.base), ("max |logit diff| vs adapter", result.max_logit_diff),
            ("saved files vs merged", result.saved_logit_diff)]
    if cfg.dtype != "float32":
        rows.append((f"{cfg.dtype} rounding effect", result.rounding_effect))
    rows.append(("adapter's effect on logits", result.adapter_effect))
    out_console.print(summary_table(f"model {result.path}", rows))
