"""What a training run of the two TRL-driven stages (sft-coldstart, train-grpo) is built from: the dataset
handed to TRL, LoRA settings and target modules per architecture, and the TrainingArguments both set the same
way. A run's life (its work folder and `--resume`, checkpoints, saving the output) is `rftcli.training_run`;
its names are importable from here too.

The TRL dataset uses TRL's conversational layout with string contents and an `images` column; TRL
inserts one image placeholder per image at the start of the first user turn, which is exactly what
`rftcli.chat.prompt_messages` does for rollout and eval, so a model sees the same prompt tokens in
training and in evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from rftcli.chat import response_text
from rftcli.model_parts import LANGUAGE_MODULES, VISION_MODULES, model_parts
from rftcli.training_run import (
    RUN_RECORD,
    WANDB_ID_FILE,
    WorkFolder,
    attach_progress,
    barrier,
    discard,
    gathered_state_dict,
    keep_if_resumable,
    open_shared_work_folder,
    open_work_folder,
    peak_memory,
    run_record,
    run_training,
    save_checkpoint,
    write_logs,
    write_output,
)
from rftcli.workfolders import checkpoints_folder as work_folder
from rftcli.workfolders import latest_checkpoint

__all__ = [  # the run's life (rftcli.training_run) stays importable from here
    "LANGUAGE_MODULES",
    "LANGUAGE_TARGETS",
    "RUN_RECORD",
    "VISION_MODULES",
    "VISION_TARGETS",
    "WANDB_ID_FILE",
    "WorkFolder",
    "attach_progress",
    "barrier",
    "checkpoint_args",
    "common_args",
    "discard",
    "gathered_state_dict",
    "keep_if_resumable",
    "latest_checkpoint",
    "lora_config",
    "lora_target_modules",
    "model_parts",
    "open_shared_work_folder",
    "open_work_folder",
    "peak_memory",
    "run_record",
    "run_training",
    "save_checkpoint",
    "trl_dataset",
    "work_folder",
    "write_logs",
    "write_output",
]

# Language-model projections only: vision blocks also have gate/up/down projections, so match by path.
LANGUAGE_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
VISION_TARGETS = r".*visual.*\.(qkv|proj|gate_proj|up_proj|down_proj)"


def trl_dataset(table: pa.Table, with_completion: bool):
    """A `datasets.Dataset` in TRL's conversational prompt(-completion) layout, images decoded lazily."""
    import datasets

    rows = table.to_pylist()
    data: dict[str, list[Any]] = {"prompt": [], "images": [], "id": [], "task": [], "answer": [], "answer_type": [],
                                  "choices": [], "metadata": []}  # metadata: accepted answers for the rewards
    if with_completion:
        data["completion"] = []
    for row in rows:
        prompt = ([{"role": "system", "content": row["system"]}] if row.get("system") else [])
        prompt.append({"role": "user", "content": row["prompt"]})
        data["prompt"].append(prompt)
        data["images"].append(row["images"])
        for key in ("id", "task", "answer", "answer_type", "choices"):
            data[key].append(row[key])
        data["metadata"].append(row.get("metadata"))
        if with_completion:
            target = response_text(row)
            if target is None:
                raise ValueError(f"row {row['id']!r} has neither response nor reasoning to train on")
            data["completion"].append([{"role": "assistant", "content": target}])
    message = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
    features = datasets.Features({
        "prompt": message,
        "images": datasets.List(datasets.Image()),
        "id": datasets.Value("string"),
        "task": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "answer_type": datasets.Value("string"),
        "choices": datasets.List(datasets.Value("string")),
        "metadata": datasets.Value("string"),
        **({"completion": message} if with_completion else {}),
    })
    return datasets.Dataset.from_dict(data, features=features)


def lora_config(r: int, alpha: int, dropout: float, vision: bool = False, target_modules: str | None = None):
    """LoRA settings; `target_modules` (a PEFT full-match regex, e.g. from `lora_target_modules`) replaces
    the Qwen-named default targets."""
    from peft import LoraConfig

    targets = f"(?:{LANGUAGE_TARGETS})|(?:{VISION_TARGETS})" if vision else LANGUAGE_TARGETS
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules or targets,
                      task_type="CAUSAL_LM")


def lora_target_modules(model: Any, vision: bool = False, names: str | None = None) -> str:
    """A PEFT `target_modules` regex: the linear layers inside the language model (and the vision tower and
    projector, with `vision`); `names` ("q_proj,v_proj") keeps only layers with those names. The embeddings
    and lm_head are never targeted. Raises ValueError naming what is missing."""
    import torch

    parts = model_parts(model)
    if not parts["language"]:
        raise ValueError(f"{type(model).__name__}: cannot find its language model (a module named "
                         f"{' or '.join(LANGUAGE_MODULES)}); pass --full")
    if vision and not parts["vision"]:
        raise ValueError(f"{type(model).__name__}: cannot find its vision tower (a module named "
                         f"{', '.join(VISION_MODULES)})")
    prefixes = parts["language"] + (parts["vision"] if vision else [])
    linear = [n for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and any(n.startswith(p + ".") for p in prefixes)]
    leaves = sorted({n.rsplit(".", 1)[-1] for n in linear})
    if names:
        wanted = {n.strip() for n in names.split(",") if n.strip()}
        unknown = sorted(wanted - set(leaves))
        if unknown:
            where = "language model and vision tower" if vision else "language model"
            raise ValueError(f"--target-modules: no linear layer named {', '.join(unknown)} in the {where}; "
                             f"available: {', '.join(leaves)}")
        linear = [n for n in linear if n.rsplit(".", 1)[-1] in wanted]
    kinds = sorted({_layer_kind(n) for n in linear})
    # The optional leading group lets the pattern also match inside a wrapper (PeftModel adds prefixes).
    return rf"(?:.*\.)?(?:{'|'.join(kinds)})"


def _layer_kind(name: str) -> str:
    """A regex for every layer like `name`: block indices become \\d+. A numeric last part (Qwen's
    `merger.mlp.0`) stays literal, since its siblings (`mlp.1`, an activation) are no linear layers."""
    import re

    *path, leaf = name.split(".")
    return r"\.".join([r"\d+" if c.isdigit() else re.escape(c) for c in path] + [re.escape(leaf)])


def common_args(output_dir: Path, *, seed: int, learning_rate: float, batch_size: int, grad_accum: int,
                epochs: float, max_steps: int, lr_scheduler: str, warmup_ratio: float, logging_steps: int,
                gradient_checkpointing: bool, report_to: str, dtype: str) -> dict[str, Any]:
    """TrainingArguments both stages set identically."""
    import torch
    from transformers import TrainingArguments

    on_gpu = torch.cuda.is_available()
    # transformers 5 renamed gradient checkpointing; older 5.x releases know only the old name.
    ckpt_key = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                else "gradient_checkpointing")
    bf16 = on_gpu and dtype in ("auto", "bfloat16") and torch.cuda.is_bf16_supported()
    # W&B (and other trackers) name the run after --out: `<out>.work` is where the trainer writes.
    run_name = Path(output_dir).name.removesuffix(".work")
    return dict(output_dir=str(output_dir), run_name=run_name, seed=seed, data_seed=seed, learning_rate=learning_rate,
                per_device_train_batch_size=batch_size, gradient_accumulation_steps=grad_accum,
                num_train_epochs=epochs, max_steps=max_steps, lr_scheduler_type=lr_scheduler,
                warmup_steps=warmup_ratio, logging_steps=logging_steps, save_strategy="no",
                **{ckpt_key: gradient_checkpointing}, report_to=report_to if report_to != "none" else [],
                bf16=bf16, fp16=on_gpu and dtype == "float16", use_cpu=not on_gpu,
                dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True)


def checkpoint_args(save_steps: int | None, save_total_limit: int | None) -> dict[str, Any]:
    """TrainingArguments for checkpoints every `save_steps` optimizer steps (None: no checkpoints)."""
    if not save_steps:
        return dict(save_strategy="no")
    return dict(save_strategy="steps", save_steps=save_steps, save_total_limit=save_total_limit)

