"""A training run's life, for sft-coldstart and train-grpo: its work folder (`OUT.work/`) and what
`--resume` continues from, running the trainer (a finished run killed while its output was written, the
weights of a full fine-tune, the W&B run a resumed run continues), checkpoints, and writing the output
folder. `rftcli.training` builds what a run is made of (its dataset, LoRA settings, TrainingArguments).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftcli.manifest import jsonable, write_checkpoint_manifest
from rftcli.workfolders import checkpoints_folder as work_folder
from rftcli.workfolders import latest_checkpoint

log = logging.getLogger("rftcli.training")


def write_logs(log_history: list[Mapping[str, Any]], work: Path, folder: Path) -> None:
    """Every logged step of a run as one JSON object per line in `metrics.jsonl`, and the TensorBoard event
    files the trainer wrote live under `<out>.work/runs/` (`--report-to tensorboard`) copied to `runs/`."""
    import shutil

    from rftcli.training_progress import metrics_row

    path = folder / "metrics.jsonl"
    with open(path, "w") as fh:
        fh.writelines(metrics_row(entry) for entry in log_history)
    if (work / "runs").is_dir():
        shutil.copytree(work / "runs", folder / "runs")


def write_output(trainer: Any, processor: Any, work: WorkFolder, out: Path, manifest: dict[str, Any], args: Any, *,
                 overwrite: bool) -> int | None:
    """Write a finished run's output folder from the main process: the weights (gathered first where DeepSpeed
    ZeRO-3 shards them, so every process must call this), the processor, the manifest (with the step the run
    resumed from), metrics.jsonl and TensorBoard's files. Returns that step, or None."""
    from rftcli.atomic import atomic_output

    resumed_from = None
    if work.resume_from is not None:
        resumed_from = int(work.resume_from.name.removeprefix("checkpoint-"))
        manifest["resumed_from_step"] = resumed_from
    state_dict = gathered_state_dict(trainer)
    if args.process_index == 0:
        with atomic_output(out, overwrite=overwrite, directory=True) as tmp:
            save_checkpoint(trainer.model, processor, tmp, manifest, state_dict=state_dict)
            write_logs(trainer.state.log_history, work.path, tmp)
    barrier(args)
    return resumed_from


def gathered_state_dict(trainer: Any) -> dict[str, Any] | None:
    """The full weights where each process holds only a shard of them (DeepSpeed ZeRO-3 shards every weight
    over its persistence threshold, so `save_pretrained` on the main process alone would write empty
    tensors); None where the model is whole. A collective call: every process must make it."""
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if plugin is None or plugin.zero_stage != 3:
        return None
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)


def save_checkpoint(model: Any, processor: Any, folder: Path, manifest: dict[str, Any],
                    state_dict: dict[str, Any] | None = None) -> None:
    """Weights (full model or adapter) in safetensors, the processor with its chat template, the manifest.
    `state_dict`: the weights gathered beforehand where `model` holds only a shard (`gathered_state_dict`)."""
    # transformers' ZeRO-3 loading path records further key conversions (a prefix change, legacy renamings)
    # whose reversal on save writes `model.model.*` names: the architecture's own mapping, which a model loaded
    # on one process reverses, gives the usual Hub layout.
    reset = state_dict is not None and "_weight_conversions" in vars(model)
    conversions = model._weight_conversions if reset else None
    if reset:
        model._weight_conversions = None
    try:
        model.save_pretrained(folder, safe_serialization=True, **({} if state_dict is None else {"state_dict": state_dict}))
    finally:
        if reset:
            model._weight_conversions = conversions
    # PEFT records the folder the base was read from: for a built-in model a temporary folder deleted at exit,
    # for a local folder the path as typed (relative to the working directory). Record a base that loads later:
    # a built-in one as its spec (what rftcli resolves), a local folder as its absolute path, a hub id as is.
    base, cfg_file = manifest.get("base_model"), Path(folder, "adapter_config.json")
    if base and cfg_file.is_file():
        from rftcli import tiny_model

        record = base if tiny_model.is_builtin(base) or not Path(base).exists() else os.path.abspath(base)
        cfg = json.loads(cfg_file.read_text())
        old = cfg.get("base_model_name_or_path")
        if old != record:
            cfg["base_model_name_or_path"] = record
            cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True))
            card = Path(folder, "README.md")  # PEFT's model card names the base too
            if old and card.is_file():
                text = card.read_text()
                for label in ("base_model: ", "base_model:adapter:"):
                    text = text.replace(f"{label}{old}\n", f"{label}{record}\n")
                card.write_text(text)
    # A fast tokenizer keeps the padding and truncation of the last batch it encoded (TRL pads prompts left, SFT
    # completions right) and writes them into tokenizer.json; transformers sets both again on every call. Cleared,
    # the saved files do not depend on what was encoded last: a run resumed from its final checkpoint, which
    # encodes nothing, writes the same tokenizer.json as the run never interrupted.
    backend = getattr(getattr(processor, "tokenizer", processor), "backend_tokenizer", None)
    if backend is not None:
        backend.no_padding()
        backend.no_truncation()
    processor.save_pretrained(folder)
    write_checkpoint_manifest(folder, manifest)


def attach_progress(trainer: Any, label: str) -> None:
    """A progress bar (plain lines off a terminal) and `<out>.work/metrics.jsonl` written as steps are logged:
    `rftcli.training_progress`."""
    from rftcli.training_progress import attach

    attach(trainer, label)


def discard(path: Path) -> None:
    """Remove a run's work folder `<out>.work` (checkpoints), renamed aside first so that a kill midway
    never leaves a checkpoint that lost its optimizer state but kept its `trainer_state.json`."""
    from rftcli.atomic import remove_aside

    remove_aside(path, path.with_name(path.name.removesuffix(".work")))


# ---------------------------------------------------------------- resumable runs
# A run that saves checkpoints keeps transformers' `checkpoint-N` folders (weights, optimizer, scheduler,
# RNG states, trainer state) in a work folder beside its output, `<out>.work/`, with `rftcli_run.json`:
# the settings and input hashes it started with. `--resume` continues from the newest complete checkpoint
# only if those are unchanged. The finished output is still written atomically; the work folder is then
# removed.
RUN_RECORD = "rftcli_run.json"


@dataclass(frozen=True)
class WorkFolder:
    path: Path
    """Trainer output_dir: `<out>.work`."""
    resume_from: Path | None
    """Newest complete checkpoint to continue from, or None for a fresh start."""


def run_record(config: Any, manifest: Mapping[str, Any],
               ignore: tuple[str, ...] = ("resume", "overwrite", "allow_pickle", "gpu_memory", "preflight")
               ) -> dict[str, Any]:
    """What must not change between a run and its resumption: each setting (as its CLI flag) and each
    input's content hash."""
    record = {"--" + f.name.replace("_", "-"): jsonable(getattr(config, f.name))
              for f in dataclasses.fields(config) if f.name not in ignore}
    record.update({f"input {role}": entry["hash"] for role, entry in manifest.get("inputs", {}).items()})
    return record


def _read_record(work: Path) -> dict[str, Any] | None:
    try:
        return json.loads((work / RUN_RECORD).read_text())
    except (OSError, json.JSONDecodeError):  # absent, or cut off by a kill while it was written
        return None


def open_work_folder(out: Path, record: dict[str, Any], *, resume: bool, overwrite: bool) -> WorkFolder:
    """Prepare `<out>.work` for a fresh run, or check it for `--resume`.

    A fresh run refuses to discard an interrupted run's checkpoints without `overwrite`; a work folder
    holding no complete checkpoint is simply replaced (nothing in it could be resumed). `--resume` with
    nothing to resume from (no work folder, or a run killed before its first complete checkpoint) starts
    from step 0, so a pipeline can always rerun the same command with `--resume` after a crash.
    """
    import shutil

    work = work_folder(out)
    checkpoint = latest_checkpoint(work) if work.is_dir() else None
    if resume and checkpoint is not None:
        before = _read_record(work)
        if before is None:
            raise ValueError(f"{work}: {RUN_RECORD} is missing or unreadable, so the settings of its checkpoints "
                             "are unknown; start over with --overwrite")
        changed = sorted(k for k in set(before) | set(record) if before.get(k) != record.get(k))
        if changed:
            raise ValueError(f"{work}: --resume needs the settings and inputs the run started with; changed: "
                             + ", ".join(changed))
        return WorkFolder(path=work, resume_from=checkpoint)
    if resume:
        log.info("%s: no complete checkpoint to resume from; starting at step 0", work)
    if work.exists():
        if checkpoint is not None and not overwrite:
            raise _interrupted_run(work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    tmp = work / f".{RUN_RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, work / RUN_RECORD)
    return WorkFolder(path=work, resume_from=None)


def _interrupted_run(work: Path) -> FileExistsError:
    return FileExistsError(f"{work}: an interrupted run's checkpoints are here; pass --resume to continue it or "
                           "--overwrite to start over")


def open_shared_work_folder(out: Path, record: dict[str, Any], args: Any, *, resume: bool,
                            overwrite: bool) -> WorkFolder:
    """`open_work_folder` for a run of one or several processes (torchrun, `accelerate launch`; `args` are
    its TrainingArguments): the main process sets the folder up, every process learns where to resume."""
    if resume or args.process_index == 0:  # with resume this only reads, so every process checks for itself
        work = open_work_folder(out, record, resume=resume, overwrite=overwrite)
    else:
        path = work_folder(out)
        if latest_checkpoint(path) is not None and not overwrite:
            raise _interrupted_run(path)
        work = WorkFolder(path=path, resume_from=None)
    barrier(args)
    return work


def barrier(args: Any) -> None:
    """Wait for every process of the run (a no-op for one)."""
    if args.world_size > 1:
        args.distributed_state.wait_for_everyone()


def run_training(trainer: Any, resume_from: Path | None) -> float:
    """`trainer.train()`, resumed from `resume_from` if given; returns the mean training loss.

    A checkpoint already at the run's last step is a finished run killed while its output was being
    written: its weights and log are loaded and no step is taken, where transformers would take one more
    step past `max_steps`. Its loss is then the step-weighted mean of the logged losses (all steps).

    A W&B run the trainer started (`--report-to wandb`) is finished here, marked failed if training raised,
    so a later stage in the same process logs to a run of its own; a run the caller started stays open. A
    resumed run continues the W&B run it started (`_wandb_run_id`)."""
    wandb = sys.modules.get("wandb")
    callers_run = wandb is not None and wandb.run is not None
    finished = False
    try:
        with _wandb_run_id(trainer, resume_from):
            loss = _train(trainer, resume_from)
        finished = True
        return loss
    finally:
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None and not callers_run:
            wandb.finish(exit_code=0 if finished else 1)


WANDB_ID_FILE = "wandb_run_id"


@contextmanager
def _wandb_run_id(trainer: Any, resume_from: Path | None) -> Iterator[None]:
    """With `--report-to wandb`, the run's W&B id is kept in its work folder, and a resumed run logs into the
    same W&B run (WANDB_RUN_ID, WANDB_RESUME=allow) instead of starting another; ids the user set win."""
    if "wandb" not in (trainer.args.report_to or []) or os.environ.get("WANDB_RUN_ID") or trainer.args.process_index:
        yield
        return
    import uuid

    path = Path(trainer.args.output_dir) / WANDB_ID_FILE
    run_id = path.read_text().strip() if resume_from is not None and path.is_file() else ""
    if not run_id:
        run_id = uuid.uuid4().hex[:12]
        path.write_text(run_id + "\n")
    saved = {k: os.environ.get(k) for k in ("WANDB_RUN_ID", "WANDB_RESUME")}
    os.environ.update(WANDB_RUN_ID=run_id, WANDB_RESUME=os.environ.get("WANDB_RESUME") or "allow")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _load_full_weights(trainer: Any, checkpoint: Path) -> bool:
    """Load a full model's checkpoint weights into `trainer.model`, as `from_pretrained` reads them; False when
    transformers' own resume path is right (adapters, DeepSpeed, FSDP, no safetensors weights).

    transformers' `Trainer._load_from_checkpoint` puts the saved tensors into the model by name, unconverted;
    `save_pretrained` writes a Qwen2.5-VL model under its Hub names (`model.layers.*`, not the module names
    `model.language_model.layers.*`), so every tensor but `lm_head` came back as "missing", a warning, and
    the run went on from the weights it started with."""
    from transformers.trainer import _is_peft_model

    from rftcli.loading import checked_from_pretrained

    model = trainer.model
    if (_is_peft_model(model) or trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
            or not any((checkpoint / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json"))):
        return False
    kwargs = {"dtype": next(model.parameters()).dtype, "device_map": {"": "cpu"}}
    saved = checked_from_pretrained(type(model), str(checkpoint), kwargs).state_dict()
    result = model.load_state_dict(saved, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"{checkpoint}: its weights do not fit the model being trained (missing "
                           f"{list(result.missing_keys)[:3]}, unexpected {list(result.unexpected_keys)[:3]})")
    return True


@contextmanager
def _resume_full_models(trainer: Any) -> Iterator[None]:
    """`trainer._load_from_checkpoint` through `_load_full_weights` where that applies, for this run."""
    own = trainer._load_from_checkpoint

    def load(resume_from_checkpoint: str, model: Any = None) -> None:
        if model is None and _load_full_weights(trainer, Path(resume_from_checkpoint)):
            return
        own(resume_from_checkpoint, model)

    trainer._load_from_checkpoint = load
    try:
        yield
    finally:
        del trainer._load_from_checkpoint  # the class's method again


def _train(trainer: Any, resume_from: Path | None) -> float:
    with _resume_full_models(trainer):
        return _train_once(trainer, resume_from)


def _train_once(trainer: Any, resume_from: Path | None) -> float:
    if resume_from is not None:
        from transformers.trainer_callback import TrainerState

        state = TrainerState.load_from_json(str(resume_from / "trainer_state.json"))
        if 0 < state.max_steps <= state.global_step:
            trainer._load_from_checkpoint(str(resume_from))  # what train() itself does first
            trainer.state = state
            total = done = 0.0
            for entry in state.log_history:
                if "loss" in entry:
                    total += entry["loss"] * (entry["step"] - done)
                    done = entry["step"]
            return total / done if done else math.nan
    return trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None).training_loss


@contextmanager
def keep_if_resumable(work: WorkFolder) -> Iterator[None]:
    """On failure, remove the work folder unless it holds a checkpoint to resume from."""
    try:
        yield
    except BaseException:
        if latest_checkpoint(work.path) is None:
            discard(work.path)
        raise


def peak_memory() -> dict[str, float]:
    """Peak memory for a log line: on a GPU the most allocated since the previous call (the counter is reset),
    in MiB; on a CPU the process's peak resident set size so far, in MiB."""
    import resource

    import torch

    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        return {"memory/peak_gpu_mb": round(peak, 1)}
    return {"memory/peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
