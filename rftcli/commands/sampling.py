"""Commands on samples: rollout draws G completions per prompt, score applies reward functions to them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
)

# ---------------------------------------------------------------- rollout
RO = stage_defaults("rollout")


def rollout(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    model: ModelOpt = None,
    out: OutOpt = None,
    base: Annotated[str | None, typer.Option(help="Base of an adapter (default: from its manifest).")] = None,
    split: SplitOpt = RO.split,
    num_generations: Annotated[int, typer.Option("--num-generations", "-n", help="Completions per prompt (G).")] = RO.num_generations,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = RO.temperature,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling (1 = off).")] = RO.top_p,
    top_k: Annotated[int, typer.Option(help="Top-k sampling (0 = off).")] = RO.top_k,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens per completion.")] = RO.max_new_tokens,
    max_prompt_length: MaxPromptLengthOpt = DEFAULT_MAX_PROMPT_LENGTH,
    max_pixels: MaxPixelsOpt = None,
    min_pixels: MinPixelsOpt = None,
    stop: Annotated[list[str] | None, typer.Option(
        "--stop", help="Stop string, repeatable: a completion ends with the token that completes it.")] = None,
    batch_size: Annotated[str, typer.Option(
        help="Prompts per generate call, or auto (halves on out-of-memory).")] = str(RO.batch_size),
    backend: Annotated[str, typer.Option(help="hf, or vllm (pip extra 'vllm'; CUDA only; untested).")] = RO.backend,
    check_logprobs: Annotated[int, typer.Option(
        help="Recompute the first N groups' log-probs with a forward pass; print the max difference.")] = RO.check_logprobs,
    limit: LimitOpt = None,
    dtype: DtypeOpt = RO.dtype,
    trust_remote_code: RemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
    seed: SeedOpt = RO.seed,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Sample G completions per prompt with their per-token log-probs -> rollouts Parquet.

    Resumable: finished prompts go to <out>.parts/; rerun the same command after a crash to continue.

    Example: rftcli rollout -d data/counting.parquet -m out/sft -n 8 --out out/rollouts.parquet
    """
    from rftcli.stages import rollout as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    rows = [("prompts", result.prompts), ("rows", result.rows), ("resumed prompts", result.resumed_prompts),
            ("batch size", result.batch_size if result.batch_size is not None else "-"),
            ("tokens/s", result.tokens_per_s), ("images shrunk", result.images_shrunk)]
    rows += [(f"finish {k}", v) for k, v in result.finish_reasons.items()]
    rows += [(f"tokens {k}", v) for k, v in result.lengths.items()]
    if result.max_logprob_diff is not None:
        rows += [("max |logprob diff|", result.max_logprob_diff)]
    out_console.print(summary_table(f"rollouts {result.path}", rows))


# ---------------------------------------------------------------- score
def score(
    ctx: typer.Context,
    rollouts: Annotated[Path | None, typer.Option("--rollouts", help="Input rollouts Parquet file.")] = None,
    out: OutOpt = None,
    rewards: RewardOpt = None,
    workers: Annotated[int, typer.Option(help="Worker processes; 1: this process; 0: one per core for "
                                              "inputs over 4096 rows.")] = stage_defaults("score").workers,
    timeout: Annotated[float, typer.Option(help="Seconds a reward may spend on one row (0: no limit).")
                       ] = stage_defaults("score").timeout,
    on_error: Annotated[str, typer.Option(help="Value of a row whose reward raised, timed out or returned "
                                               "NaN/inf: abstain (null) or zero.")] = stage_defaults("score").on_error,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Apply reward functions to rollouts -> scores Parquet with reward_<name> columns and a total.

    Prints means, group statistics, failures and reward-hacking signals; the manifest keeps them too.
    Resumable: scored rows (reward values only) go to <out>.parts/; rerun the same command after a crash to
    continue.

    Example: rftcli score --rollouts out/rollouts.parquet -r accuracy=1 -r format=0.2 --out out/scores.parquet
    """
    from rftcli.stages import score as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    rows = [("rows", result.rows), ("groups", result.groups)]
    rows += [(f"mean {k}", v) for k, v in result.mean.items()]
    rows += [("mean group std", result.group_std), ("zero-variance groups", result.zero_variance_groups)]
    rows += [(f"errors {k}", v) for k, v in result.errors.items()]
    rows += [(f"timeouts {k}", v) for k, v in result.timeouts.items()]
    rows += [(k.replace("_", " "), v) for k, v in result.diagnostics.items()]
    rows += [("workers", result.workers), ("resumed rows", result.resumed_rows),
             ("rows/s", result.rows / max(result.seconds, 1e-9))]
    out_console.print(summary_table(f"scores {result.path}", rows))
