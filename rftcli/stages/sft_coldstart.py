"""sft-coldstart: supervised fine-tuning that teaches the answer format before RL.

Reads training rows and trains with TRL's `SFTTrainer` on prompt-completion pairs, so the loss covers
the assistant turn only (TRL's `completion_only_loss`: prompt, image and chat-template tokens are
labelled -100; the target text and its `<|im_end|>` are kept, so the model learns to stop).

Training rows come from
- a `dataset` table: the target is `response`, else `reasoning` + `answer` in the think/answer format;
- a `rollouts` or `scores` table (distillation, rejection sampling): the target is the sampled
  `completion`. Completions cut off at the token limit (`finish_reason` "length") or empty are dropped,
  since training on them would teach the model to stop mid-answer; `min_reward` keeps only rows whose
  `reward_column` is at least that (an abstaining reward, null, never passes).

Writes a PEFT LoRA adapter folder or, with `full`, a full model folder; either carries
`rftcli_manifest.json` naming its base model, and `metrics.jsonl` with every logged step (training loss,
and `eval_loss` on `eval_split`, always once at the end). `report_to tensorboard` also writes event files,
live under `<out>.work/runs/` and kept in `<out>/runs/`; `report_to wandb` logs the run, named after `out`
(a resumed run continues it).

Several GPUs: the same command under `torchrun` or `accelerate launch` (recipes/accelerate/); only the main
process writes the output, after gathering the weights where DeepSpeed ZeRO-3 shards them.

Model choices:
- LoRA targets every linear layer of the language model (found per architecture by
  `rftcli.training.lora_target_modules`); `lora_vision` adds the vision tower and projector;
  `target_modules` keeps only the named layers.
- QLoRA (`load_in_4bit`): NF4 with double quantization, compute in bf16 on GPUs that have it (fp32 on a
  CPU); the vision tower and lm_head stay unquantized. TRL keeps the LoRA weights in bf16, following the
  QLoRA paper. `peft.prepare_model_for_kbit_training` is deliberately not called: besides what TRL and
  PEFT already do (freeze the base, make inputs require grads under gradient checkpointing) it casts every
  unquantized weight - here the whole vision tower, the embeddings and lm_head - to fp32, about 3.5 GB
  more for a 7B VLM, which is what 4-bit loading was meant to save.
- Packing is refused: TRL's SFTTrainer does not pack vision-language data (each row's image tokens must
  stay with its pixels), and rftcli's data always has an images column.

Checkpoints (`save_steps`) go to `<out>.work/`, transformers' `checkpoint-N` folders; `resume` continues
an interrupted run from the newest complete one, with weights, optimizer, scheduler, RNG states and data
position restored, so the result equals an uninterrupted run's (see tests/test_sft_merge.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from rftcli.atomic import check_output
from rftcli.contamination import table_hashes, training_record
from rftcli.families.support import refuse
from rftcli.images import check_table_images
from rftcli.limits import (
    DEFAULT_MAX_PROMPT_LENGTH,
    ImageShrinker,
    PromptBudget,
    apply_image_budget,
    check_limits,
    row_positions,
)
from rftcli.manifest import make_manifest
from rftcli.ordering import longest_row, worst_first
from rftcli.plan import preflight
from rftcli.schema import dataset_columns, read_table
from rftcli.stages.rollout import select_split

# What to do when a dataset's rows hold questions and answers only (one line, after the row's position).
NO_TARGETS = ("Rows with questions and answers only need no cold start: train online GRPO from the base model, "
              "`rftcli train-grpo -d {path} -m MODEL ...`. Or make targets from the model's own correct answers: "
              "`rftcli rollout -d {path} -m MODEL --out rollouts.parquet`, `rftcli score --rollouts rollouts.parquet "
              "-r accuracy=1 --out scores.parquet`, then `rftcli sft-coldstart -d scores.parquet --min-reward 1 "
              "-m MODEL ...`")
PACKING_REFUSED = ("--packing is not supported: TRL's SFTTrainer does not pack vision-language data (it refuses "
                   "datasets with images); leave it off")


@dataclass(frozen=True)
class Config:
    dataset: Path
    """Training rows: a dataset Parquet (response or reasoning column), or a rollouts/scores table whose
    completions become the targets (distillation)."""
    model: str
    """Start model: hub id, local folder or builtin:NAME."""
    out: Path
    """Output checkpoint folder."""
    split: str = "train"
    """Split to train on."""
    full: bool = False
    """Train all weights instead of a LoRA adapter."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha."""
    lora_dropout: float = 0.05
    """LoRA dropout."""
    lora_vision: bool = False
    """Also put LoRA on the vision tower and projector (default: language model only)."""
    target_modules: str | None = None
    """Comma-separated linear layer names to adapt, e.g. q_proj,v_proj (default: every linear layer)."""
    load_in_4bit: bool = False
    """QLoRA: load the base in 4-bit NF4 with double quantization (needs bitsandbytes)."""
    learning_rate: float = 2e-4
    """Peak learning rate."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule (transformers names: linear, cosine, constant, ...)."""
    warmup_ratio: float = 0.03
    """Share of steps spent warming up."""
    epochs: float = 1.0
    """Passes over the data (ignored when max_steps > 0)."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: use epochs)."""
    batch_size: int = 8
    """Sequences per device per step."""
    grad_accum: int = 1
    """Gradient accumulation steps."""
    max_length: int | None = None
    """Truncate sequences to this many tokens (None: no truncation)."""
    max_prompt_length: int = DEFAULT_MAX_PROMPT_LENGTH
    """Most tokens a prompt may have, text and images (capped at the model's context length); longer is refused."""
    max_pixels: int | None = None
    """Shrink images above this many pixels (default: the processor's limit, at most 1,003,520)."""
    min_pixels: int | None = None
    """The processor enlarges images below this many pixels (default: the processor's own)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory."""
    packing: bool = False
    """Not supported for vision-language data (TRL refuses it); True is an error."""
    min_reward: float | None = None
    """Distillation: keep only completions whose reward_column is at least this (scores tables)."""
    reward_column: str = "reward"
    """Distillation: the scores column min_reward applies to, e.g. reward_accuracy."""
    eval_split: str | None = None
    """Split to compute eval_loss on (e.g. val); None: no evaluation."""
    eval_dataset: Path | None = None
    """Table the eval split comes from, unfiltered (default: the training input, with its filters)."""
    eval_steps: int | None = None
    """Also evaluate every N steps (default: only at the end)."""
    save_steps: int | None = None
    """Save a resumable checkpoint in <out>.work every N steps (None: none)."""
    save_total_limit: int | None = 2
    """Keep at most this many checkpoints in <out>.work (None: all)."""
    resume: bool = False
    """Continue the interrupted run in <out>.work from its newest complete checkpoint."""
    limit: int | None = None
    """Use only the first N training rows (after filtering)."""
    logging_steps: int = 10
    """Log every N steps to metrics.jsonl."""
    report_to: str = "none"
    """Also log to tensorboard or wandb."""
    dtype: str = "auto"
    """Model dtype: auto, float32, bfloat16, float16."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint."""
    allow_pickle: bool = False
    """Load weights stored only as pickle files (.bin/.pt), which can run code (off: safetensors only)."""
    seed: int = 0
    """Seed for data order and initialisation."""
    overwrite: bool = False
    """Replace an existing output (and an interrupted run's checkpoints)."""
    gpu_memory: float | None = None
    """Device memory in GiB the preflight plans against (None: CUDA's total; no check on CPU)."""
    preflight: bool = True
    """Before loading weights, stop with one line when the plan (rftcli.plan) says the run cannot fit."""

    def __post_init__(self):
        if self.packing:
            raise ValueError(PACKING_REFUSED)
        if self.full and self.load_in_4bit:
            raise ValueError("--full and --load-in-4bit cannot be combined: 4-bit weights are not trainable")
        if self.full and (self.lora_vision or self.target_modules):
            raise ValueError("--lora-vision and --target-modules choose LoRA layers; --full trains every weight")
        check_limits(self.max_prompt_length, self.max_pixels, self.min_pixels)
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1 (or unset), got {self.limit}")
        for name in ("save_steps", "eval_steps", "save_total_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or unset)")
        if self.resume and not self.save_steps:
            raise ValueError("--resume continues from checkpoints: the run needs --save-steps")
        if self.eval_steps and not self.eval_split:
            raise ValueError("--eval-steps needs --eval-split")
        if self.eval_split and self.eval_split == self.split and self.eval_dataset is None:
            raise ValueError(f"eval split {self.eval_split!r} is the training split; pick another (e.g. val)")
        if not self.reward_column.startswith("reward"):
            raise ValueError(f"reward_column must be reward or reward_<name>, got {self.reward_column!r}")


@dataclass(frozen=True)
class Result:
    path: Path
    steps: int
    train_loss: float
    rows: int
    """Rows trained on."""
    rows_read: int
    """Rows of the split before distillation filters."""
    eval_loss: float | None
    resumed_from: int | None
    """Step of the checkpoint the run continued from."""
    images_shrunk: int = 0
    """Images over the pixel budget shrunk before use."""


def sft_rows(path: Path, split: str, min_reward: float | None = None, reward_column: str = "reward",
             limit: int | None = None) -> tuple[pa.Table, int]:
    """A split's training rows in the dataset layout (target in `response`), the first `limit` of them, and
    the split's row count before filtering. See the module docstring for what a rollouts or scores table
    contributes. Only the rows kept have their images decoded and their target checked."""
    art = read_table(path, ("dataset", "rollouts", "scores"))
    # Rows are named by their place in the file, whatever the split, filter and limit keep.
    table = select_split(art.table.append_column("_file_row", pa.array(range(art.table.num_rows), pa.int64())), split)
    read = table.num_rows
    if art.kind == "dataset" and min_reward is not None:
        raise ValueError(f"{path}: --min-reward filters a scores table's completions; this is a dataset table")
    rows = table if art.kind == "dataset" else _completion_rows(path, art, table, min_reward, reward_column)
    rows = rows.slice(0, limit) if limit is not None else rows
    file_rows = rows["_file_row"].to_pylist()
    targets = rows.select(["response", "reasoning"]).to_pylist()
    missing = [i for i, row in enumerate(targets) if not row["response"] and not row["reasoning"]]
    if missing:
        raise ValueError(f"{path}: row {file_rows[missing[0]]}, column 'response': neither response nor reasoning "
                         f"to train on ({len(missing)} of {len(targets)} rows of split {split!r} have none). "
                         + NO_TARGETS.format(path=path))
    check_table_images(path, rows, rows=file_rows)
    return rows.drop_columns(["_file_row"]), read


def _completion_rows(path: Path, art: Any, table: pa.Table, min_reward: float | None, reward_column: str) -> pa.Table:
    """A rollouts or scores table's completions kept for training, in the dataset layout plus `_file_row`."""
    import pyarrow.compute as pc

    if min_reward is not None:
        if art.kind != "scores":
            raise ValueError(f"{path}: a rollouts table has no rewards for --min-reward; run `rftcli score` first")
        if reward_column not in table.column_names:
            raise ValueError(f"{path}: no column {reward_column!r}; reward columns: reward, "
                             + ", ".join(f"reward_{n}" for n in art.reward_names))
        table = table.filter(pc.fill_null(pc.greater_equal(table[reward_column], min_reward), False))
    table = table.filter(pc.and_(pc.equal(table["finish_reason"], "stop"),
                                 pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(table["completion"])), 0)))
    rows = dataset_columns(table)
    rows = rows.set_column(rows.schema.get_field_index("response"), "response", table["completion"])
    rows = rows.set_column(rows.schema.get_field_index("reasoning"), "reasoning",
                           pa.nulls(rows.num_rows, pa.string()))
    return rows.append_column("_file_row", table["_file_row"])


def sft_args(config: Config, output_dir: Path):
    """TRL's SFTConfig for this stage (made before the model loads: it sets up the processes of a run)."""
    from trl import SFTConfig

    from rftcli.training import checkpoint_args, common_args

    return SFTConfig(**{**common_args(output_dir, seed=config.seed, learning_rate=config.learning_rate,
                                      batch_size=config.batch_size, grad_accum=config.grad_accum,
                                      epochs=config.epochs, max_steps=config.max_steps,
                                      lr_scheduler=config.lr_scheduler, warmup_ratio=config.warmup_ratio,
                                      logging_steps=config.logging_steps,
                                      gradient_checkpointing=config.gradient_checkpointing,
                                      report_to=config.report_to, dtype=config.dtype),
                        **checkpoint_args(config.save_steps, config.save_total_limit)},
                     max_length=config.max_length, completion_only_loss=True, packing=False,
                     eval_strategy="steps" if config.eval_steps else "no", eval_steps=config.eval_steps,
                     per_device_eval_batch_size=config.batch_size)


def sft_trainer(config: Config, loaded: Any, train: Any, eval_data: Any, output_dir: Path, args: Any = None):
    """TRL's SFTTrainer as this stage sets it up (tests inspect its collator)."""
    from trl import SFTTrainer

    from rftcli.training import lora_config, lora_target_modules

    args = args if args is not None else sft_args(config, output_dir)
    peft_config = None
    if not config.full:
        targets = lora_target_modules(loaded.model, vision=config.lora_vision, names=config.target_modules)
        peft_config = lora_config(config.lora_r, config.lora_alpha, config.lora_dropout, target_modules=targets)
    return SFTTrainer(model=loaded.model, args=args, train_dataset=train, eval_dataset=eval_data,
                      processing_class=loaded.processor, peft_config=peft_config)


def _quantization(model: Any) -> dict[str, Any] | None:
    qc = getattr(model.config, "quantization_config", None)
    if qc is None:
        return None
    qc = qc if isinstance(qc, dict) else qc.to_dict()
    return {k: str(qc.get(k)) if k == "bnb_4bit_compute_dtype" else qc.get(k)
            for k in ("load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype",
                      "llm_int8_skip_modules")}


def run(config: Config) -> Result:
    from rftcli.loading import build_builtins, load_model
    from rftcli.training import (
        attach_progress,
        discard,
        keep_if_resumable,
        open_shared_work_folder,
        run_record,
        run_training,
        trl_dataset,
        work_folder,
        write_output,
    )

    check_output(config.out, config.overwrite, inputs=[config.dataset, config.eval_dataset, config.model])
    refuse("sft-qlora" if config.load_in_4bit else "sft-lora", config.model)  # a family the stack cannot run
    table, read = sft_rows(config.dataset, config.split, config.min_reward, config.reward_column, config.limit)
    if table.num_rows == 0:
        kept = f" with {config.reward_column} >= {config.min_reward:g}" if config.min_reward is not None else ""
        raise ValueError(f"{config.dataset}: no rows to train on in split {config.split!r}{kept}")
    row_hashes = table_hashes(table)  # the rows as stored, before any image is shrunk
    # Before any weights load: images over the pixel budget shrunk, every prompt within the prompt budget.
    budget = PromptBudget(config.model, max_prompt_length=config.max_prompt_length, max_pixels=config.max_pixels,
                          min_pixels=config.min_pixels, trust_remote_code=config.trust_remote_code,
                          allow_pickle=config.allow_pickle)
    shrinker = ImageShrinker(budget.max_pixels)
    table = shrinker.table(table)
    rows = table.to_pylist()
    budget.check(config.dataset, rows, row_positions(config.dataset))
    preflight(config, rows)  # a run that cannot fit the device stops here, before any weights load
    longest = longest_row(rows, config.model)  # the first step runs it: an out-of-memory comes at once
    train = trl_dataset(table, with_completion=True)
    eval_data = None
    if config.eval_split:
        eval_source = config.eval_dataset or config.dataset
        # The reward filter is the training input's; a separate eval table is taken as it is.
        min_reward = config.min_reward if config.eval_dataset is None else None
        eval_table, _ = sft_rows(eval_source, config.eval_split, min_reward, config.reward_column)
        if eval_table.num_rows == 0:
            raise ValueError(f"{eval_source}: no rows to evaluate on in split {config.eval_split!r}")
        eval_table = shrinker.table(eval_table)
        budget.check(eval_source, eval_table.to_pylist(), row_positions(eval_source))
        eval_data = trl_dataset(eval_table, with_completion=True)
    inputs = {"dataset": config.dataset, "model": config.model}
    if config.eval_dataset is not None:
        inputs["eval_dataset"] = config.eval_dataset
    manifest = make_manifest("sft-coldstart", config, inputs, seed=config.seed,
                             base_model=None if config.full else config.model,
                             kind="full" if config.full else "adapter", rows=table.num_rows, rows_read=read)
    manifest["training_data"] = training_record(config.model, "sft-coldstart", config.dataset,
                                                manifest["inputs"]["dataset"]["hash"], config.split,
                                                row_hashes, config.out)
    build_builtins(config.model)
    args = sft_args(config, work_folder(config.out))
    manifest["world_size"] = args.world_size
    # A resumed run must see the data in the same order, so the same number of processes too.
    work = open_shared_work_folder(config.out, {**run_record(config, manifest), "processes": args.world_size}, args,
                                   resume=config.resume, overwrite=config.overwrite)
    with keep_if_resumable(work):
        # A 4-bit model is placed by device map: each process on its own device.
        loaded = load_model(config.model, dtype=config.dtype, load_in_4bit=config.load_in_4bit,
                            trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle,
                            merge_adapter=True, device=str(args.device) if config.load_in_4bit else None)
        manifest["quantization"] = _quantization(loaded.model)
        apply_image_budget(loaded.processor, config.max_pixels, config.min_pixels)
        trainer = worst_first(sft_trainer(config, loaded, train, eval_data, work.path, args), longest)
        attach_progress(trainer, "sft")
        training_loss = run_training(trainer, work.resume_from)
        eval_loss = None
        if eval_data is not None:
            evals = [e for e in trainer.state.log_history if "eval_loss" in e]
            if evals and evals[-1]["step"] == trainer.state.global_step:
                eval_loss = float(evals[-1]["eval_loss"])
            else:
                eval_loss = float(trainer.evaluate()["eval_loss"])
        resumed_from = write_output(trainer, loaded.processor, work, config.out, manifest, args,
                                    overwrite=config.overwrite)
    if args.process_index == 0:
        discard(work.path)
    # train_loss: TRL's mean over the steps this process ran (after a resume, those since the checkpoint).
    return Result(path=config.out, steps=trainer.state.global_step, train_loss=float(training_loss),
                  rows=table.num_rows, rows_read=read, eval_loss=eval_loss, resumed_from=resumed_from,
                  images_shrunk=shrinker.shrunk)
