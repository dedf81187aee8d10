"""train-grpo (online): GRPO with TRL's `GRPOTrainer` and rftcli's reward functions.

Reads a `dataset`; TRL samples `num_generations` completions per prompt, scores them with the same
reward functions `score` uses (weights passed as TRL's `reward_weights`), and updates a LoRA adapter
(default) or all weights. Writes a checkpoint folder with `rftcli_manifest.json` (naming the base
model, which may itself be an adapter: it is merged before the new adapter is added) and
`metrics.jsonl`. The loss variants are TRL's (`loss_type`: grpo, dr_grpo, dapo, bnpo, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rftcli.atomic import atomic_output, check_output
from rftcli.manifest import make_manifest
from rftcli.schema import read_table
from rftcli.stages.rollout import select_split
from rftcli.stages.score import load_rewards

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")


@dataclass(frozen=True)
class Config:
    dataset: Path
    """Input dataset Parquet file."""
    model: str
    """Start policy: hub id, local folder (full or adapter) or builtin:NAME."""
    out: Path
    """Output checkpoint folder."""
    split: str = "train"
    """Dataset split to train on."""
    rewards: tuple[str, ...] = ("accuracy=1", "format=0.2")
    """Reward functions with weights, NAME[=WEIGHT]."""
    num_generations: int = 4
    """Completions per prompt (group size G)."""
    max_completion_length: int = 64
    """Most tokens per completion."""
    temperature: float = 1.0
    """Sampling temperature."""
    beta: float = 0.0
    """KL coefficient against the start model (0: no reference model)."""
    epsilon: float = 0.2
    """Lower clip range of the importance ratio."""
    epsilon_high: float | None = None
    """Upper clip range (DAPO clip-higher); None = epsilon."""
    loss_type: str = "dapo"
    """Loss aggregation: grpo, dr_grpo, dapo, bnpo, cispo, sapo."""
    scale_rewards: str = "group"
    """Advantage scaling: group (std per group), batch, or none."""
    num_iterations: int = 1
    """Policy updates per generated batch (mu)."""
    full: bool = False
    """Train all weights instead of a LoRA adapter."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha."""
    lora_dropout: float = 0.0
    """LoRA dropout."""
    lora_vision: bool = False
    """Also put LoRA on the vision tower."""
    load_in_4bit: bool = False
    """QLoRA: 4-bit NF4 base (needs bitsandbytes)."""
    learning_rate: float = 1e-5
    """Peak learning rate."""
    lr_scheduler: str = "constant"
    """Learning-rate schedule."""
    warmup_ratio: float = 0.0
    """Share of steps spent warming up."""
    epochs: float = 1.0
    """Passes over the prompts (ignored when max_steps > 0)."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: use epochs)."""
    batch_size: int = 8
    """Completions per device per step (a multiple of num_generations)."""
    grad_accum: int = 1
    """Gradient accumulation steps."""
    gradient_checkpointing: bool = False
    """Trade compute for memory."""
    limit: int | None = None
    """Use only the first N prompts of the split."""
    logging_steps: int = 10
    """Log every N steps to metrics.jsonl."""
    report_to: str = "none"
    """Also log to tensorboard or wandb."""
    dtype: str = "auto"
    """Model dtype: auto, float32, bfloat16, float16."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint."""
    seed: int = 0
    """Seed for sampling, data order and initialisation."""
    overwrite: bool = False
    """Replace an existing output."""

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError("scale_rewards must be group, batch or none")
        if self.num_generations < 2:
            raise ValueError("num_generations must be at least 2: advantages are relative to the group")
        if (self.batch_size * self.grad_accum) % self.num_generations:
            raise ValueError(f"batch_size x grad_accum ({self.batch_size * self.grad_accum}) must be a multiple of "
                             f"num_generations ({self.num_generations})")
        if self.full and self.load_in_4bit:
            raise ValueError("--full and --load-in-4bit cannot be combined: 4-bit weights are not trainable")


@dataclass(frozen=True)
class Result:
    path: Path
    steps: int
    train_loss: float
    reward_first: float | None
    reward_last: float | None


def run(config: Config) -> Result:
    from trl import GRPOConfig, GRPOTrainer

    from rftcli.loading import load_model
    from rftcli.training import (attach_progress, common_args, discard, lora_config, save_checkpoint,
                                 trl_dataset, write_metrics)

    check_output(config.out, config.overwrite)
    rewards = load_rewards(config.rewards)
    data = read_table(config.dataset, "dataset")
    table = select_split(data.table, config.split)
    if config.limit is not None:
        table = table.slice(0, config.limit)
    if table.num_rows == 0:
        raise ValueError(f"{config.dataset}: no rows in split {config.split!r}")
    train = trl_dataset(table, with_completion=False)
    loaded = load_model(config.model, dtype=config.dtype, load_in_4bit=config.load_in_4bit,
                        trust_remote_code=config.trust_remote_code, merge_adapter=True)
    manifest = make_manifest("train-grpo", config, {"dataset": config.dataset, "model": config.model},
                             seed=config.seed, base_model=None if config.full else config.model,
                             kind="full" if config.full else "adapter",
                             rewards=[{"name": r.name, "weight": r.weight} for r in rewards])
    with atomic_output(config.out, overwrite=config.overwrite, directory=True) as tmp:
        args = GRPOConfig(**common_args(tmp / "trainer", seed=config.seed, learning_rate=config.learning_rate,
                                        batch_size=config.batch_size, grad_accum=config.grad_accum,
                                        epochs=config.epochs, max_steps=config.max_steps,
                                        lr_scheduler=config.lr_scheduler, warmup_ratio=config.warmup_ratio,
                                        logging_steps=config.logging_steps,
                                        gradient_checkpointing=config.gradient_checkpointing,
                                        report_to=config.report_to, dtype=config.dtype),
                          num_generations=config.num_generations, max_completion_length=config.max_completion_length,
                          temperature=config.temperature, beta=config.beta, epsilon=config.epsilon,
                          epsilon_high=config.epsilon_high, loss_type=config.loss_type,
                          scale_rewards=config.scale_rewards, num_iterations=config.num_iterations,
                          reward_weights=[r.weight for r in rewards], log_completions=False)
        trainer = GRPOTrainer(model=loaded.model, reward_funcs=[r.fn for r in rewards], args=args,
                              train_dataset=train, processing_class=loaded.processor,
                              peft_config=None if config.full else lora_config(config.lora_r, config.lora_alpha,
                                                                               config.lora_dropout,
                                                                               config.lora_vision))
        attach_progress(trainer, "grpo")
        output = trainer.train()
        save_checkpoint(trainer.model, loaded.processor, tmp, manifest)
        write_metrics(trainer.state.log_history, tmp)
        discard(tmp / "trainer")
    rewards_logged = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    return Result(path=config.out, steps=trainer.state.global_step, train_loss=float(output.training_loss),
                  reward_first=rewards_logged[0] if rewards_logged else None,
                  reward_last=rewards_logged[-1] if rewards_logged else None)

