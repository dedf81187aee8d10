"""The `rftcli` command: a thin Typer layer. Each command builds its stage's frozen config (defaults <
`--config` YAML < flags), calls the stage's `run`, and prints a rich summary. Heavy libraries are
imported inside commands so `rftcli --help` stays instant.

Exit codes: 0 success; 2 bad usage, settings or input data, an existing output without --overwrite or an
output folder that cannot be written (one-line `error:` on stderr naming the file, row and column); 1 a
full disk (one line naming the output and how to continue) or an internal failure (one line; `rftcli
--debug ...` shows the traceback).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rftcli import __version__
from rftcli.config import build_config
from rftcli.limits import DEFAULT_MAX_PROMPT_LENGTH
from rftcli.options import training, with_options

app = typer.Typer(help="Reinforcement fine-tuning of vision-language models, one stage per command.\n\n"
                       "Stages read and write files: dataset -> sft-coldstart -> rollout -> score -> train-grpo "
                       "-> merge -> eval.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
console = Console(stderr=True)
out_console = Console()

# Shared options, spelled the same in every command.
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

    from rftcli.processor_compat import quiet_loading_notices

    # bitsandbytes' optional-kernel notice, DeepSpeed's "Setting accelerator to CPU", a deprecation PEFT triggers.
    quiet_loading_notices()
    # TRL prints a row whose rewards all abstained in full (its prompt, images, completion); rftcli has logged
    # each failing reward with its row number already.
    logging.getLogger("trl.trainer.grpo_trainer").addFilter(
        lambda record: not record.getMessage().startswith("All reward functions returned None"))
    # Deprecation notices addressed to library developers (renamed arguments inside transformers/peft).
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|trl)\.")


def fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    # Escaped: file names and messages may hold square brackets that rich would read as markup.
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def errors_as_messages() -> Iterator[None]:
    """Bad input, settings, an existing or unwritable output: one line, exit 2. A full disk: one line naming
    the output, exit 1. Anything else is internal: one line, exit 1, and the traceback with --debug."""
    from rftcli.atomic import checked_outputs
    from rftcli.errors import first_line, write_failure

    since = len(checked_outputs())  # outputs checked from here on are this command's
    try:
        yield
    except typer.Exit:
        raise
    except Exception as err:
        if _DEBUG["on"]:
            raise
        failure = write_failure(err, since)
        if failure is not None:
            fail(*failure)
        if isinstance(err, (ValueError, FileExistsError, FileNotFoundError, ImportError)):
            fail(first_line(err), code=2)
        fail(f"internal error ({type(err).__name__}): {first_line(err)}; rerun with --debug for the traceback",
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


def _pct_or_dash(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1%}"


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
    task: Annotated[str | None, typer.Option(
        help="Built-in synthetic task: counting, comparison, arithmetic, grounding.")] = None,
    input: Annotated[Path | None, typer.Option("--input", "-i", help=(
        "File or folder to convert: .jsonl, .json, .csv/.tsv, .parquet, a datasets save_to_disk folder, "
        "images with a labels file, the Geometry3K folder."))] = None,
    format: Annotated[str, typer.Option(
        "--format", help="Input layout: auto, rows, llava, mathvista, geometry3k, clevr, refcoco, scienceqa, aokvqa, "
        "chartqa, vqa, mmbench, ai2d, wemath, ocrbench.")] = PD.format,
    num: Annotated[int, typer.Option(help="Rows to generate for --task.")] = PD.num,
    task_options: Annotated[list[str] | None, typer.Option(
        "--task-option", help="Task knob key=value, repeatable (see each task's docstring).")] = None,
    map: Annotated[list[str] | None, typer.Option("--map", help="Rename input column src=dst, repeatable.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt for rows without one: think or your text.")] = None,
    instruction: Annotated[str | None, typer.Option(help=(
        "Instruction for prompts: think (default), answer, boxed, none, your text, or a template with "
        "{question}."))] = None,
    question: Annotated[str | None, typer.Option(help="Prompt for input rows that have none.")] = None,
    image_root: Annotated[Path | None, typer.Option(help="Folder relative image paths start from.")] = None,
    allow_outside_paths: Annotated[bool, typer.Option(
        "--allow-outside-paths", help="Let image paths in the data leave that folder (.., absolute paths).")] = False,
    max_pixels: Annotated[int | None, typer.Option(help="Shrink larger images to this many pixels.")] = None,
    min_pixels: Annotated[int | None, typer.Option(help="Enlarge smaller images to this many pixels.")] = None,
    max_image_pixels: Annotated[int, typer.Option(
        help="Refuse images above this many pixels (decompression-bomb guard).")] = PD.max_image_pixels,
    video_frames: Annotated[int, typer.Option(help="Frames sampled from each video.")] = PD.video_frames,
    box_format: Annotated[str, typer.Option(help="Source boxes: auto, xyxy or xywh.")] = PD.box_format,
    box_units: Annotated[str, typer.Option(help="Source boxes: auto, pixel, normalized, norm1000.")] = PD.box_units,
    dedupe: Annotated[bool, typer.Option(
        "--dedupe/--keep-duplicates", help="Drop input rows repeating an earlier row's content.")] = PD.dedupe,
    skip_bad: Annotated[bool, typer.Option(
        "--skip-bad", help="Write good rows and a rejects table instead of stopping at a bad row.")] = False,
    rejects: Annotated[Path | None, typer.Option(
        help="Rejects Parquet for --skip-bad (default <out>.rejects.parquet).")] = None,
    split_from: Annotated[str, typer.Option(help=(
        "Splits of --input rows: source (the source's own where it has one, else id hash) or hash."))] = PD.split_from,
    drop_cross_split_duplicates: Annotated[bool, typer.Option(
        "--drop-cross-split-duplicates", help="Drop rows repeating an earlier split's content (train, val, test).")] = False,
    test_fraction: Annotated[float, typer.Option(help="Share of rows in the test split.")] = PD.test_fraction,
    val_fraction: Annotated[float, typer.Option(help="Share of rows in the val split.")] = PD.val_fraction,
    limit: LimitOpt = None,
    shuffle: Annotated[bool, typer.Option("--shuffle", help="Shuffle rows (seeded by --seed).")] = False,
    shuffle_buffer: Annotated[int, typer.Option(help="Rows held for --shuffle.")] = PD.shuffle_buffer,
    seed: SeedOpt = PD.seed,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Make a dataset Parquet from a built-in task or from data in a published layout.

    Example: rftcli prepare-data --task counting --num 2000 --out data/counting.parquet
    """
    from rftcli.stages import prepare_data as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    out_console.print(_table(f"dataset {result.path}", stage.describe(result)))


# ---------------------------------------------------------------- sft-coldstart
SF = _defaults("sft_coldstart")


@app.command("sft-coldstart")
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
    out_console.print(_table(f"checkpoint {result.path}", rows))


# ---------------------------------------------------------------- rollout
RO = _defaults("rollout")


@app.command("rollout")
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
    out_console.print(_table(f"rollouts {result.path}", rows))


# ---------------------------------------------------------------- score
@app.command("score")
def score(
    ctx: typer.Context,
    rollouts: Annotated[Path | None, typer.Option("--rollouts", help="Input rollouts Parquet file.")] = None,
    out: OutOpt = None,
    rewards: RewardOpt = None,
    workers: Annotated[int, typer.Option(help="Worker processes; 1: this process; 0: one per core for "
                                              "inputs over 4096 rows.")] = _defaults("score").workers,
    timeout: Annotated[float, typer.Option(help="Seconds a reward may spend on one row (0: no limit).")
                       ] = _defaults("score").timeout,
    on_error: Annotated[str, typer.Option(help="Value of a row whose reward raised, timed out or returned "
                                               "NaN/inf: abstain (null) or zero.")] = _defaults("score").on_error,
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
    out_console.print(_table(f"scores {result.path}", rows))


# ---------------------------------------------------------------- check-rewards
@app.command("check-rewards")
def check_rewards(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    out: OutOpt = None,
    rewards: RewardOpt = None,
    min_agreement: Annotated[float, typer.Option(
        help="Lowest agreement accepted per answer type and reward; below it the exit code is 1.")
    ] = _defaults("check_rewards").min_agreement,
    split: Annotated[str | None, typer.Option("--split", help="Check only this split (default: all rows).")] = None,
    limit: LimitOpt = None,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Self-test of answer rewards on your data: right answers in the forms models write must be paid, wrong
    and hacked ones (a neighbour, digits in a word, two answers, a box at IoU 0.1) must not -> JSON report.

    Run it on a converted dataset before a long run (default rewards: accuracy, count, iou).

    Example: rftcli check-rewards -d data/train.parquet -r accuracy -r count -r iou --out out/check.json
    """
    from rftcli.stages import check_rewards as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    t = Table(title=f"reward self-test {cfg.dataset} ({result.rows} rows, {result.forms} completions)",
              title_justify="left")
    for column in ("answer type", "reward", "rows", "n/a rows", "checks", "agreement", "first failures"):
        t.add_column(column)
    for c in result.cells:
        shown = "; ".join(f"{f['id']}: {f['form']} ({'paid' if f['expected'] == 'not paid' else 'not paid'})"
                          for f in c.failures[:3])
        t.add_row(c.answer_type, c.reward, str(c.rows), str(c.na_rows), str(c.checks),
                  "-" if not c.checks else f"{c.agreement:.1%}", shown)
    out_console.print(t)
    if result.skipped:
        out_console.print("rows not rendered: " + ", ".join(f"{k} {v}" for k, v in result.skipped.items()))
    out_console.print(f"report: {result.path}")
    if not result.passed:
        fail(f"agreement below --min-agreement {cfg.min_agreement:g}; the report lists the failures", code=1)


# ---------------------------------------------------------------- train-grpo
TG = _defaults("train_grpo")


@app.command("train-grpo")
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
    out_console.print(_table(f"checkpoint {result.path}", rows))


# ---------------------------------------------------------------- merge
MG = _defaults("merge")


@app.command("merge")
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
    out_console.print(_table(f"model {result.path}", rows))


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


@app.command("doctor")
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
    out_console.print(_table("rftcli doctor", lib.rows(info)))


def run() -> None:  # pragma: no cover - console entry for `python -m rftcli`
    app(prog_name="rftcli", args=sys.argv[1:])
