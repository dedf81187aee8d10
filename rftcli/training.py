"""What the two TRL-driven stages (sft-coldstart, train-grpo) share: the dataset handed to TRL, LoRA
settings, the TrainingArguments both set the same way, and how a finished run is saved.

The TRL dataset uses TRL's conversational layout with string contents and an `images` column; TRL
inserts one image placeholder per image at the start of the first user turn, which is exactly what
`rftcli.chat.prompt_messages` does for rollout and eval, so a model sees the same prompt tokens in
training and in evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from rftcli.chat import response_text
from rftcli.manifest import write_checkpoint_manifest

# Language-model projections only: vision blocks also have gate/up/down projections, so match by path.
LANGUAGE_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
VISION_TARGETS = r".*visual.*\.(qkv|proj|gate_proj|up_proj|down_proj)"


def trl_dataset(table: pa.Table, with_completion: bool):
    """A `datasets.Dataset` in TRL's conversational prompt(-completion) layout, images decoded lazily."""
    import datasets

    rows = table.to_pylist()
    data: dict[str, list[Any]] = {"prompt": [], "images": [], "id": [], "task": [], "answer": [], "answer_type": [],
                                  "choices": []}
    if with_completion:
        data["completion"] = []
    for row in rows:
        prompt = ([{"role": "system", "content": row["system"]}] if row.get("system") else [])
        prompt.append({"role": "user", "content": row["prompt"]})
        data["prompt"].append(prompt)
        data["images"].append(row["images"])
        for key in ("id", "task", "answer", "answer_type", "choices"):
            data[key].append(row[key])
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
        **({"completion": message} if with_completion else {}),
    })
    return datasets.Dataset.from_dict(data, features=features)


def lora_config(r: int, alpha: int, dropout: float, vision: bool = False):
    from peft import LoraConfig

    targets = f"(?:{LANGUAGE_TARGETS})|(?:{VISION_TARGETS})" if vision else LANGUAGE_TARGETS
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")


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
    return dict(output_dir=str(output_dir), seed=seed, data_seed=seed, learning_rate=learning_rate,
                per_device_train_batch_size=batch_size, gradient_accumulation_steps=grad_accum,
                num_train_epochs=epochs, max_steps=max_steps, lr_scheduler_type=lr_scheduler,
                warmup_steps=warmup_ratio, logging_steps=logging_steps, save_strategy="no",
                **{ckpt_key: gradient_checkpointing}, report_to=report_to if report_to != "none" else [],
                bf16=bf16, fp16=on_gpu and dtype == "float16", use_cpu=not on_gpu,
                dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True)


def write_metrics(log_history: list[Mapping[str, Any]], folder: Path) -> Path:
    """Every logged step of a run as one JSON object per line."""
    path = folder / "metrics.jsonl"
    with open(path, "w") as fh:
        for entry in log_history:
            fh.write(json.dumps(dict(entry), sort_keys=True) + "\n")
    return path


def save_checkpoint(model: Any, processor: Any, folder: Path, manifest: dict[str, Any]) -> None:
    """Weights (full model or adapter) in safetensors, the processor with its chat template, the manifest."""
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    write_checkpoint_manifest(folder, manifest)


def progress_callback(label: str):
    """A rich progress bar for a TRL trainer, showing the latest loss (and reward, for GRPO)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        def __init__(self):
            self.bar: Progress | None = None
            self.task = None

        def on_train_begin(self, args, state, control, **kw):
            self.bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                TimeRemainingColumn(), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(label, total=state.max_steps, completed=state.global_step, info="")

        def on_step_end(self, args, state, control, **kw):
            self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            info = "  ".join(f"{k} {logs[k]:.3g}" for k in ("loss", "reward") if isinstance(logs.get(k), (int, float)))
            if info:
                self.bar.update(self.task, info=info)

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.stop()

    return RichProgress()


def attach_progress(trainer: Any, label: str) -> None:
    """Swap the trainer's print-every-log callback for a progress bar (logs still go to metrics.jsonl)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(progress_callback(label))


def discard(path: Path) -> None:
    """Remove a scratch folder (the trainer's output_dir inside a checkpoint being written)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
