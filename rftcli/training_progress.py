"""What a training run shows while it runs: its progress, and `metrics.jsonl` growing step by step.

sft-coldstart and train-grpo (online, and offline) drive a transformers `Trainer`; `attach` gives it one
callback, on the main process only, that
- says at the start how many steps the run takes and where its metrics are written;
- on a terminal draws a rich progress bar: step/total, elapsed time, ETA, and the latest logged loss,
  reward and KL; elsewhere (a log file, `| tee`, CI) prints one plain line per logged step, and at least
  one a minute, so a long run never looks hung;
- appends every logged entry to `<out>.work/metrics.jsonl` as it is logged, flushed, so
  `tail -f <out>.work/metrics.jsonl` follows the run. A resumed run first rewrites it from its
  checkpoint's log, so it never holds the steps a killed run logged after that checkpoint. The finished
  output's `metrics.jsonl` is written from the trainer's log history: the same rows.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

LIVE_METRICS = "metrics.jsonl"
SHOWN = ("loss", "reward", "kl", "eval_loss")
"""Logged values shown beside the bar, when the run logs them (KL only with --beta above 0)."""
PLAIN_EVERY_S = 60.0
"""Off a terminal, the longest wait between two progress lines."""


def metrics_row(entry: dict[str, Any]) -> str:
    """One logged entry as its metrics.jsonl line (the finished output's file uses the same)."""
    return json.dumps(dict(entry), sort_keys=True) + "\n"


def duration(seconds: float) -> str:
    """`H:MM:SS`, as rich's time columns show it."""
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def shown_values(logs: dict[str, Any]) -> str:
    """The latest loss, reward and KL of a log entry, as `loss 0.412  reward 0.81`."""
    parts = []
    for key in SHOWN:
        value = logs.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
            parts.append(f"{key} {value:.4g}")
    return "  ".join(parts)


def progress_callback(label: str, console: Any = None):
    """The callback `attach` adds (a transformers `TrainerCallback`); `console`: a rich Console (default:
    stderr), a terminal or not."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from transformers import TrainerCallback

    class TrainingProgress(TrainerCallback):
        def __init__(self):
            self.console = console if console is not None else Console(stderr=True)
            self.bar: Progress | None = None
            self.task = None
            self.started = 0.0
            self.first_step = 0
            self.last_line = 0.0
            self.info = ""
            self.live: Path | None = None

        def on_train_begin(self, args, state, control, **kw):
            if not state.is_world_process_zero:
                return
            self.live = Path(args.output_dir) / LIVE_METRICS
            tmp = self.live.with_name(f".{LIVE_METRICS}.tmp")
            with open(tmp, "w") as fh:  # a resumed run: its checkpoint's log, nothing a killed run added later
                fh.writelines(metrics_row(e) for e in state.log_history)
            os.replace(tmp, self.live)
            self.started = self.last_line = time.monotonic()
            self.first_step = state.global_step
            resumed = f", resuming at step {state.global_step}" if state.global_step else ""
            steps = f"{state.max_steps} step{'s' if state.max_steps != 1 else ''}"
            self.console.print(f"{label}: {steps}{resumed}; metrics as they are logged: "
                               f"{self.live}", highlight=False, soft_wrap=True)
            if self.console.is_terminal:
                self.bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                    TextColumn("{task.fields[info]}"), console=self.console, transient=True)
                self.bar.start()
                self.task = self.bar.add_task(label, total=state.max_steps, completed=state.global_step, info="")

        def on_step_end(self, args, state, control, **kw):
            if not state.is_world_process_zero:
                return
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step)
            elif time.monotonic() - self.last_line >= PLAIN_EVERY_S:
                self._line(state)

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or self.live is None:
                return
            with open(self.live, "a") as fh:  # closed at once: the row is on disk for `tail -f`
                fh.write(metrics_row(state.log_history[-1]))
            info = shown_values(logs or {})
            if not info:  # the run's closing summary (train_runtime, ...) or an entry without those values
                return
            self.info = info
            if self.bar is not None:
                self.bar.update(self.task, info=info)
            else:
                self._line(state)

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.stop()
                self.bar = None

        def _line(self, state) -> None:
            now = time.monotonic()
            elapsed = now - self.started
            done = state.global_step - self.first_step
            eta = duration(elapsed / done * (state.max_steps - state.global_step)) if done > 0 else "-:--:--"
            self.console.print(f"{label} step {state.global_step}/{state.max_steps}  elapsed {duration(elapsed)}  "
                               f"ETA {eta}  {self.info}".rstrip(), highlight=False, soft_wrap=True)
            self.last_line = now

    return TrainingProgress()


def attach(trainer: Any, label: str, console: Any = None) -> None:
    """Replace the trainer's print-every-log callbacks with `progress_callback(label)`."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(progress_callback(label, console))
