"""train-grpo: GRPO on a vision-language model, online (TRL samples) or offline (from scored rollouts).

Online (`dataset`): TRL's `GRPOTrainer` samples `num_generations` completions per prompt, scores them
with the reward functions `score` uses (weights as TRL's `reward_weights`; a reward that raises or runs
out of time on a row abstains there instead of stopping the run), and updates the policy. The loss
variants, clipping, KL, importance-sampling level, overlong masking, high-entropy token selection and
vLLM rollouts are TRL's own. TRL has no DAPO dynamic sampling: `dynamic_sampling` is refused online
(zero-variance groups get advantage 0 there, so they add no policy gradient, but they do count in the
loss normaliser; `frac_reward_zero_std` in metrics.jsonl says how many there were).

Offline (`rollouts`): the update from a `scores` table, see `rftcli.offline_grpo` (group-relative
advantages, the stored log-probs in the ratio, the same loss types, dynamic sampling, a policy check).

Both write a checkpoint folder: a LoRA adapter on the start model (default; the start model may itself
be an adapter, merged first) or all weights (`full`), `rftcli_manifest.json` naming the base, and
`metrics.jsonl` (per logged step: loss, reward mean/std per function, KL, clip fractions, entropy,
completion length, step time, peak memory). `report_to tensorboard` writes event files to
`<out>.work/runs/` while training (`tensorboard --logdir <out>.work`), copied to `<out>/runs/` at the end. `save_steps` keeps resumable checkpoints (weights,
optimizer, scheduler, RNG states) in `<out>.work/`; `resume` continues a killed run from the newest.

Several GPUs: run the same command under `accelerate launch` or `torchrun` (recipes/accelerate/ has
DDP and DeepSpeed ZeRO-2/3 configs); only the main process writes the output, after gathering the weights
where ZeRO-3 shards them.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rftcli.atomic import check_output
from rftcli.contamination import offline_hashes, table_hashes, training_record
from rftcli.families.support import refuse, refuse_several_images
from rftcli.limits import (
    DEFAULT_MAX_PROMPT_LENGTH,
    ImageShrinker,
    PromptBudget,
    apply_image_budget,
    check_limits,
    row_positions,
)
from rftcli.loading import build_builtins
from rftcli.manifest import make_manifest
from rftcli.ordering import longest_row, worst_first
from rftcli.plan import preflight
from rftcli.stages.rollout import used_rows

if TYPE_CHECKING:
    from rftcli.grpo_loss import LossSettings

DEFAULT_REWARDS = ("accuracy=1", "format=0.2")
VLLM_MODES = ("colocate", "server")
DYNAMIC_SAMPLING_ONLINE = ("--dynamic-sampling works offline only (--rollouts): TRL's GRPOTrainer cannot drop "
                           "and resample zero-variance groups. Online, such groups already get advantage 0; "
                           "metrics.jsonl reports their share as frac_reward_zero_std")


@dataclass(frozen=True, kw_only=True)
class Config:
    dataset: Path | None = None
    """Online: the dataset Parquet to sample prompts from."""
    rollouts: Path | None = None
    """Offline: a scores Parquet (rollout -> score) to update from, instead of sampling."""
    model: str
    """Start policy: hub id, local folder (full or adapter) or builtin:NAME."""
    out: Path
    """Output checkpoint folder."""
    split: str = "train"
    """Split to train on."""
    rewards: tuple[str, ...] | None = None
    """Reward functions with weights, NAME[=WEIGHT] (online default: accuracy=1, format=0.2). Offline:
    weights for the table's reward_<name> columns (default: the weights score used)."""
    num_generations: int = 4
    """Online: completions per prompt (group size G)."""
    max_completion_length: int = 64
    """Online: most tokens per completion."""
    temperature: float = 1.0
    """Online: sampling temperature (offline: the rollouts')."""
    beta: float = 0.0
    """KL coefficient against the start model (0: no reference model)."""
    epsilon: float = 0.2
    """Lower clip range of the importance ratio."""
    epsilon_high: float | None = None
    """Upper clip range (DAPO clip-higher); None = epsilon."""
    loss_type: str = "dapo"
    """Loss aggregation: grpo, dr_grpo, dapo, bnpo, cispo, sapo."""
    scale_rewards: str = "group"
    """Advantage scaling: group (std per group), batch, or none (Dr. GRPO)."""
    importance_sampling_level: str = "token"
    """Importance ratio per token, or per sequence (GSPO: exp of the mean log-ratio)."""
    mask_truncated_completions: bool = False
    """Leave completions cut off at the length limit out of the loss (DAPO's overlong filtering)."""
    top_entropy_quantile: float = 1.0
    """Train only on the top share of tokens by entropy (0.2 in "Beyond the 80/20 rule"; 1: all)."""
    dynamic_sampling: bool = False
    """Offline: drop groups whose rewards do not vary (DAPO) and report how many."""
    allow_policy_mismatch: bool = False
    """Offline: train on rollouts sampled from another checkpoint than `model`."""
    num_iterations: int = 1
    """Policy updates per generated batch (mu); offline: passes over the table."""
    use_vllm: bool = False
    """Online: generate with vLLM (CUDA; not with load_in_4bit)."""
    vllm_mode: str = "colocate"
    """colocate (vLLM in the training process) or server (a separate `trl vllm-serve`)."""
    full: bool = False
    """Train all weights instead of a LoRA adapter."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha."""
    lora_dropout: float = 0.0
    """LoRA dropout."""
    lora_vision: bool = False
    """Also put LoRA on the vision tower and projector."""
    target_modules: str | None = None
    """Comma-separated linear layer names to adapt, e.g. q_proj,v_proj (default: every linear layer)."""
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
    """Completions per device per step (online: with grad_accum, a multiple of num_generations)."""
    grad_accum: int = 1
    """Gradient accumulation steps."""
    gradient_checkpointing: bool = False
    """Trade compute for memory."""
    save_steps: int | None = None
    """Save a resumable checkpoint in <out>.work every N steps (None: none)."""
    save_total_limit: int | None = 2
    """Keep at most this many checkpoints in <out>.work (None: all)."""
    resume: bool = False
    """Continue the interrupted run in <out>.work from its newest complete checkpoint."""
    limit: int | None = None
    """Use only the first N prompts (offline: groups) of the split."""
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
    max_prompt_length: int = DEFAULT_MAX_PROMPT_LENGTH
    """Most tokens a prompt may have, text and images (capped at the model's context length); longer is refused."""
    max_pixels: int | None = None
    """Shrink images above this many pixels (default: the processor's limit, at most 1,003,520)."""
    min_pixels: int | None = None
    """The processor enlarges images below this many pixels (default: the processor's own)."""
    seed: int = 0
    """Seed for sampling, data order and initialisation."""
    overwrite: bool = False
    """Replace an existing output (and an interrupted run's checkpoints)."""
    gpu_memory: float | None = None
    """Device memory in GiB the preflight plans against (None: CUDA's total; no check on CPU)."""
    preflight: bool = True
    """Before loading weights, stop with one line when the plan (rftcli.plan) says the run cannot fit."""

    def __post_init__(self):
        if (self.dataset is None) == (self.rollouts is None):
            raise ValueError("give --dataset (online: sample and train) or --rollouts (offline: train on a scores "
                             "table), not both")
        from rftcli.grpo_loss import LossSettings  # torch: imported here so `rftcli --help` stays fast

        LossSettings(loss_type=self.loss_type, importance_sampling_level=self.importance_sampling_level)  # checks
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError("scale_rewards must be group, batch or none")
        if not 0.0 < self.top_entropy_quantile <= 1.0:
            raise ValueError("top_entropy_quantile must be in (0, 1]")
        if self.vllm_mode not in VLLM_MODES:
            raise ValueError(f"vllm_mode must be {' or '.join(VLLM_MODES)}")
        if self.report_to not in ("none", "tensorboard", "wandb"):
            raise ValueError("report_to must be none, tensorboard or wandb")
        if self.batch_size < 1 or self.grad_accum < 1 or self.num_iterations < 1:
            raise ValueError("batch_size, grad_accum and num_iterations must be at least 1")
        check_limits(self.max_prompt_length, self.max_pixels, self.min_pixels)
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1 (or unset), got {self.limit}")
        if self.full and self.load_in_4bit:
            raise ValueError("--full and --load-in-4bit cannot be combined: 4-bit weights are not trainable")
        if self.full and (self.lora_vision or self.target_modules):
            raise ValueError("--lora-vision and --target-modules choose LoRA layers; --full trains every weight")
        for name in ("save_steps", "save_total_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or unset)")
        if self.resume and not self.save_steps:
            raise ValueError("--resume continues from checkpoints: the run needs --save-steps")
        if self.rollouts is not None:
            if self.use_vllm:
                raise ValueError("--use-vllm generates completions; offline training (--rollouts) generates none")
            return
        if self.num_generations < 2:
            raise ValueError("num_generations must be at least 2: advantages are relative to the group")
        if not self.temperature > 0 or self.max_completion_length < 1:
            raise ValueError("temperature must be > 0 and max_completion_length at least 1")
        if (self.batch_size * self.grad_accum) % self.num_generations:
            raise ValueError(f"batch_size x grad_accum ({self.batch_size * self.grad_accum}) must be a multiple of "
                             f"num_generations ({self.num_generations})")
        if self.dynamic_sampling:
            raise ValueError(DYNAMIC_SAMPLING_ONLINE)
        if self.use_vllm and self.load_in_4bit:
            raise ValueError("--use-vllm cannot be combined with --load-in-4bit: TRL syncs weights to vLLM by merging "
                             "the LoRA adapter into the base, which 4-bit weights do not allow. Drop one of them")
        if self.save_steps and self.save_steps % self.num_iterations:
            raise ValueError(f"save_steps ({self.save_steps}) must be a multiple of num_iterations "
                             f"({self.num_iterations}), so a resumed run generates where the original would")


@dataclass(frozen=True)
class Result:
    path: Path
    steps: int
    train_loss: float
    reward_first: float | None
    reward_last: float | None
    mode: str = "online"
    """online or offline."""
    resumed_from: int | None = None
    """Step of the checkpoint the run continued from."""
    groups: int | None = None
    """Offline: groups read."""
    dropped_groups: int = 0
    images_shrunk: int = 0
    """Images over the pixel budget shrunk before use."""
    """Offline: groups dynamic sampling left out."""


def _require(module: str, message: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(message)


def _check_backends(config: Config) -> None:
    if config.report_to == "tensorboard":
        _require("tensorboard", "--report-to tensorboard needs the tensorboard package (pip install tensorboard)")
    if config.report_to == "wandb":
        _require("wandb", "--report-to wandb needs the wandb package (pip install wandb)")
    if config.use_vllm:
        _require("vllm", "--use-vllm needs vLLM on a CUDA machine (pip install 'rftcli[vllm]')")


def _settings(config: Config, max_completion_length: int) -> LossSettings:
    from rftcli.grpo_loss import LossSettings

    return LossSettings(loss_type=config.loss_type, epsilon_low=config.epsilon,
                        epsilon_high=config.epsilon if config.epsilon_high is None else config.epsilon_high,
                        beta=config.beta, importance_sampling_level=config.importance_sampling_level,
                        max_completion_length=max_completion_length)


def _args(config: Config, output_dir: Path, epochs: float) -> dict[str, Any]:
    """TrainingArguments shared by both modes (GRPOConfig adds TRL's own)."""
    import torch

    from rftcli.training import checkpoint_args, common_args

    args = common_args(output_dir, seed=config.seed, learning_rate=config.learning_rate,
                       batch_size=config.batch_size, grad_accum=config.grad_accum, epochs=epochs,
                       max_steps=config.max_steps, lr_scheduler=config.lr_scheduler,
                       warmup_ratio=config.warmup_ratio, logging_steps=config.logging_steps,
                       gradient_checkpointing=config.gradient_checkpointing, report_to=config.report_to,
                       dtype=config.dtype)
    args.update(checkpoint_args(config.save_steps, config.save_total_limit))
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        args["ddp_backend"] = "gloo"  # several CPU processes (torchrun, accelerate launch) talk over gloo
    return args


def _lora(config: Config, model: Any):
    from rftcli.training import lora_config, lora_target_modules

    if config.full:
        return None
    targets = lora_target_modules(model, vision=config.lora_vision, names=config.target_modules)
    return lora_config(config.lora_r, config.lora_alpha, config.lora_dropout, target_modules=targets)


def _limits(config: Config) -> tuple[PromptBudget, ImageShrinker]:
    """The prompt budget and the image shrinker of the start model (its processor and config, no weights)."""
    budget = PromptBudget(config.model, max_prompt_length=config.max_prompt_length, max_pixels=config.max_pixels,
                          min_pixels=config.min_pixels, trust_remote_code=config.trust_remote_code,
                          allow_pickle=config.allow_pickle)
    return budget, ImageShrinker(budget.max_pixels)


def _load(config: Config, args: Any):
    from rftcli.loading import load_model

    # A 4-bit model is placed by device map: each process on its own device.
    return load_model(config.model, dtype=config.dtype, load_in_4bit=config.load_in_4bit,
                      trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle, merge_adapter=True,
                      device=str(args.device) if config.load_in_4bit else None)


def _online_trainer(config: Config, work_path: Path):
    """TRL's GRPOTrainer with rftcli's rewards, as the online mode runs it."""
    from rftcli.rewards.combine import isolated_rewards
    from rftcli.stages.score import load_rewards
    from rftcli.training import peak_memory, trl_dataset

    rewards = load_rewards(config.rewards or DEFAULT_REWARDS)
    table = used_rows(config.dataset, config.split, config.limit)
    row_hashes = table_hashes(table)  # the rows as stored, before any image is shrunk
    budget, shrinker = _limits(config)  # before any weights load
    table = shrinker.table(table)
    rows = table.to_pylist()
    positions = row_positions(config.dataset)
    refuse_several_images("grpo-online", config.model, rows, config.dataset, positions)  # before weights load
    budget.check(config.dataset, rows, positions)
    preflight(config, rows)  # a run that cannot fit the device stops here, before any weights load
    longest = longest_row(rows, config.model)  # the first step runs it: an out-of-memory comes at once
    # The input is checked: only now the imports and the model that take seconds to minutes.
    from trl import GRPOConfig, GRPOTrainer

    class Trainer(GRPOTrainer):
        def log(self, logs, start_time=None):
            logs.update(peak_memory())
            super().log(logs, start_time)

    build_builtins(config.model)
    args = GRPOConfig(**_args(config, work_path, config.epochs),
                      num_generations=config.num_generations, max_completion_length=config.max_completion_length,
                      temperature=config.temperature, beta=config.beta, epsilon=config.epsilon,
                      epsilon_high=config.epsilon_high, loss_type=config.loss_type,
                      scale_rewards=config.scale_rewards, num_iterations=config.num_iterations,
                      importance_sampling_level=config.importance_sampling_level,
                      mask_truncated_completions=config.mask_truncated_completions,
                      top_entropy_quantile=config.top_entropy_quantile, use_vllm=config.use_vllm,
                      vllm_mode=config.vllm_mode, reward_weights=[r.weight for r in rewards], log_completions=False)

    def build(loaded):
        funcs = isolated_rewards(rewards)
        return worst_first(Trainer(model=loaded.model, reward_funcs=funcs, args=args,
                                   train_dataset=trl_dataset(table, False), processing_class=loaded.processor,
                                   peft_config=_lora(config, loaded.model)), longest)

    return args, build, {"rewards": [{"name": r.name, "weight": r.weight} for r in rewards], "_row_hashes": row_hashes,
                         "images_shrunk": shrinker.shrunk}


def _offline_trainer(config: Config, work_path: Path, policy_hash: str):
    import copy

    import torch

    from rftcli.offline_grpo import build_trainer, load_offline

    data = load_offline(config.rollouts, split=config.split, limit=config.limit, scale_rewards=config.scale_rewards,
                        dynamic_sampling=config.dynamic_sampling, rewards=config.rewards, policy_hash=policy_hash,
                        allow_policy_mismatch=config.allow_policy_mismatch)
    row_hashes = offline_hashes(config.rollouts, data.rows)  # before any image is shrunk
    budget, shrinker = _limits(config)  # before any weights load
    for row in data.rows:
        row["images"] = shrinker.images(row["images"])
    budget.check(config.rollouts, data.rows, row_positions(config.rollouts))
    preflight(config, data.rows)  # a run that cannot fit the device stops here, before any weights load
    longest = longest_row(data.rows, config.model)  # the first step runs it: an out-of-memory comes at once
    # The input is checked: only now the imports and the model that take seconds to minutes.
    from peft import get_peft_model
    from transformers import TrainingArguments
    from transformers.integrations import is_deepspeed_zero3_enabled
    from trl.trainer.utils import add_fused_lm_head

    build_builtins(config.model)
    args = TrainingArguments(**_args(config, work_path, config.epochs * config.num_iterations))

    def build(loaded):
        model, ref = loaded.model, None
        data.check_token_ids(config.rollouts, model.get_input_embeddings().num_embeddings)
        if config.beta != 0.0 and config.full:
            # Under ZeRO-3 the policy holds only its shard of each weight and a copy would too: load the reference
            # anew (sharded as it loads); the trainer hands it to DeepSpeed.
            ref = _load(config, args).model if is_deepspeed_zero3_enabled() else copy.deepcopy(model)
            ref.eval().requires_grad_(False)
            add_fused_lm_head(ref, temperature=data.temperature)
        add_fused_lm_head(model, temperature=data.temperature, outputs=("log_probs", "entropy"))
        peft_config = _lora(config, model)
        if peft_config is not None:
            model = get_peft_model(model, peft_config)
            if config.gradient_checkpointing:
                model.enable_input_require_grads()
            if config.load_in_4bit:  # LoRA weights in bf16 on a 4-bit base, as TRL does (QLoRA paper)
                for p in model.parameters():
                    if p.requires_grad:
                        p.data = p.data.to(torch.bfloat16)
        return worst_first(build_trainer(model=model, processor=loaded.processor, data=data, args=args,
                                         settings=_settings(config, data.max_new_tokens),
                                         mask_truncated_completions=config.mask_truncated_completions,
                                         top_entropy_quantile=config.top_entropy_quantile, ref_model=ref), longest)

    extra = {"rewards": [{"name": n, "weight": w} for n, w in zip(data.reward_names, data.reward_weights, strict=True)],
             "rollouts": {"groups": data.groups, "completions": len(data.rows), "zero_std_groups": data.zero_std_groups,
                          "dropped_groups": data.dropped_groups, "temperature": data.temperature,
                          "max_new_tokens": data.max_new_tokens, "policy_hashes": data.policy_hashes},
             "images_shrunk": shrinker.shrunk, "_row_hashes": row_hashes}
    return args, build, extra


def run(config: Config) -> Result:
    # Before the heavy imports: a refusal comes at once.
    check_output(config.out, config.overwrite, inputs=[config.dataset, config.rollouts, config.model])
    refuse("grpo-offline" if config.rollouts else "grpo-online", config.model)  # a family the stack cannot run
    from rftcli.training import (
        attach_progress,
        discard,
        keep_if_resumable,
        open_shared_work_folder,
        run_record,
        run_training,
        work_folder,
        write_output,
    )

    _check_backends(config)
    offline = config.rollouts is not None
    inputs = {"rollouts" if offline else "dataset": config.rollouts or config.dataset, "model": config.model}
    manifest = make_manifest("train-grpo", config, inputs, seed=config.seed,
                             base_model=None if config.full else config.model,
                             kind="full" if config.full else "adapter", mode="offline" if offline else "online")
    if offline:
        args, build, extra = _offline_trainer(config, work_folder(config.out), manifest["inputs"]["model"]["hash"])
    else:
        args, build, extra = _online_trainer(config, work_folder(config.out))
    row_hashes = extra.pop("_row_hashes")
    manifest.update(extra, world_size=args.world_size)
    role = "rollouts" if offline else "dataset"
    manifest["training_data"] = training_record(config.model, "train-grpo", inputs[role],
                                                manifest["inputs"][role]["hash"], config.split, row_hashes, config.out)
    # A resumed run must see the data in the same order, so the same number of processes too.
    work = open_shared_work_folder(config.out, {**run_record(config, manifest), "processes": args.world_size}, args,
                                   resume=config.resume, overwrite=config.overwrite)
    from transformers import set_seed

    with keep_if_resumable(work):
        loaded = _load(config, args)
        apply_image_budget(loaded.processor, config.max_pixels, config.min_pixels)
        # The new adapter's random init must not depend on what ran before in this process.
        set_seed(config.seed)
        trainer = build(loaded)
        attach_progress(trainer, "grpo")
        training_loss = run_training(trainer, work.resume_from)
        resumed_from = write_output(trainer, loaded.processor, work, config.out, manifest, args,
                                    overwrite=config.overwrite)
    if args.process_index == 0:
        discard(work.path)
    rewards_logged = [e["reward"] for e in trainer.state.log_history if e.get("reward") is not None]
    rollouts = extra.get("rollouts", {})
    # train_loss: the mean over the steps this process ran (after a resume, those since the checkpoint).
    return Result(path=config.out, steps=trainer.state.global_step, train_loss=float(training_loss),
                  reward_first=rewards_logged[0] if rewards_logged else None,
                  reward_last=rewards_logged[-1] if rewards_logged else None, mode="offline" if offline else "online",
                  resumed_from=resumed_from, groups=rollouts.get("groups"),
                  dropped_groups=rollouts.get("dropped_groups", 0), images_shrunk=extra.get("images_shrunk", 0))
