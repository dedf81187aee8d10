"""sft-coldstart: supervised fine-tuning that teaches the answer format before RL.

Reads a `dataset` (rows with `response`, or `reasoning` + `answer`) and trains with TRL's
`SFTTrainer` on prompt-completion pairs, so the loss covers the assistant turn only (TRL's
`completion_only_loss`). Writes a PEFT LoRA adapter folder (default: language model only) or, with
`--full`, a full model folder; either carries `rftcli_manifest.json` naming its base model, and
`metrics.jsonl` with the logged steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rftcli.atomic import atomic_output, check_output
from rftcli.manifest import make_manifest
from rftcli.schema import read_table
from rftcli.stages.rollout import select_split


@dataclass(frozen=True)
class Config:
    dataset: Path
    """Input dataset Parquet file (rows need response or reasoning)."""
    model: str
    """Start model: hub id, local folder or builtin:NAME."""
    out: Path
    """Output checkpoint folder."""
    split: str = "train"
    """Dataset split to train on."""
    full: bool = False
    """Train all weights instead of a LoRA adapter."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha."""
    lora_dropout: float = 0.05
    """LoRA dropout."""
    lora_vision: bool = False
    """Also put LoRA on the vision tower."""
    load_in_4bit: bool = False
    """QLoRA: load the base in 4-bit NF4 (needs bitsandbytes)."""
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
    gradient_checkpointing: bool = False
    """Trade compute for memory."""
    limit: int | None = None
    """Use only the first N rows of the split."""
    logging_steps: int = 10
    """Log every N steps to metrics.jsonl."""
    report_to: str = "none"
    """Also log to tensorboard or wandb."""
    dtype: str = "auto"
    """Model dtype: auto, float32, bfloat16, float16."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint."""
    seed: int = 0
    """Seed for data order and initialisation."""
    overwrite: bool = False
    """Replace an existing output."""

    def __post_init__(self):
        if self.full and self.load_in_4bit:
            raise ValueError("--full and --load-in-4bit cannot be combined: 4-bit weights are not trainable")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be at least 1")


@dataclass(frozen=True)
class Result:
    path: Path
    steps: int
    train_loss: float
    rows: int


def run(config: Config) -> Result:
    from trl import SFTConfig, SFTTrainer

    from rftcli.loading import load_model
    from rftcli.training import (attach_progress, common_args, discard, lora_config, save_checkpoint,
                                 trl_dataset, write_metrics)

    check_output(config.out, config.overwrite)
    data = read_table(config.dataset, "dataset")
    table = select_split(data.table, config.split)
    if config.limit is not None:
        table = table.slice(0, config.limit)
    if table.num_rows == 0:
        raise ValueError(f"{config.dataset}: no rows in split {config.split!r}")
    train = trl_dataset(table, with_completion=True)
    loaded = load_model(config.model, dtype=config.dtype, load_in_4bit=config.load_in_4bit,
                        trust_remote_code=config.trust_remote_code, merge_adapter=True)
    manifest = make_manifest("sft-coldstart", config, {"dataset": config.dataset, "model": config.model},
                             seed=config.seed, base_model=None if config.full else config.model,
                             kind="full" if config.full else "adapter")
    with atomic_output(config.out, overwrite=config.overwrite, directory=True) as tmp:
        args = SFTConfig(**common_args(tmp / "trainer", seed=config.seed, learning_rate=config.learning_rate,
                                       batch_size=config.batch_size, grad_accum=config.grad_accum,
                                       epochs=config.epochs, max_steps=config.max_steps,
                                       lr_scheduler=config.lr_scheduler, warmup_ratio=config.warmup_ratio,
                                       logging_steps=config.logging_steps,
                                       gradient_checkpointing=config.gradient_checkpointing,
                                       report_to=config.report_to, dtype=config.dtype),
                         max_length=config.max_length, completion_only_loss=True)
        trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=train, processing_class=loaded.processor,
                             peft_config=None if config.full else lora_config(config.lora_r, config.lora_alpha,
                                                                              config.lora_dropout, config.lora_vision))
        attach_progress(trainer, "sft")
        output = trainer.train()
        save_checkpoint(trainer.model, loaded.processor, tmp, manifest)
        write_metrics(trainer.state.log_history, tmp)
        discard(tmp / "trainer")
    return Result(path=config.out, steps=trainer.state.global_step, train_loss=float(output.training_loss),
                  rows=table.num_rows)

