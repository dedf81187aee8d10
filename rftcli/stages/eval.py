"""eval: one or more checkpoints on a `dataset` split, scored with the reward library.

Writes a folder holding `results.parquet` (the `eval` table: one row per model, prompt and sample) and
`summary.json` (per model: accuracy overall and by task, strict-format rate, mean and p95 response
length, truncation rate, tokens/s). Greedy decoding by default.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from rftcli.atomic import atomic_output, check_output
from rftcli.manifest import make_manifest
from rftcli.schema import read_table, write_table
from rftcli.stages.rollout import select_split
from rftcli.stages.score import load_rewards, score_columns

EVAL_REWARDS = ("accuracy", "format")


@dataclass(frozen=True)
class Config:
    dataset: Path
    """Input dataset Parquet file."""
    models: tuple[str, ...]
    """Models to evaluate: hub ids, folders (full or adapter) or builtin:NAME."""
    out: Path
    """Output folder (results.parquet, summary.json)."""
    labels: tuple[str, ...] = ()
    """Names for the models in tables (default: the folder name or the argument)."""
    split: str = "test"
    """Dataset split to evaluate."""
    max_new_tokens: int = 64
    """Most tokens generated per answer."""
    batch_size: int = 16
    """Prompts per generate call."""
    limit: int | None = None
    """Use only the first N prompts of the split."""
    dtype: str = "auto"
    """Model dtype: auto, float32, bfloat16, float16."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint."""
    seed: int = 0
    """Seed (greedy decoding does not use it)."""
    overwrite: bool = False
    """Replace an existing output."""

    def __post_init__(self):
        if not self.models:
            raise ValueError("give at least one --model")
        if self.labels and len(self.labels) != len(self.models):
            raise ValueError(f"got {len(self.labels)} labels for {len(self.models)} models")
        if len(set(self.model_labels)) != len(self.models):
            raise ValueError(f"model labels must be unique, got {', '.join(self.model_labels)}; pass --label")

    @property
    def model_labels(self) -> list[str]:
        if self.labels:
            return list(self.labels)
        return [Path(m).name if Path(m).exists() else m for m in self.models]


@dataclass(frozen=True)
class Result:
    path: Path
    summary: dict[str, Any]


def _percentile(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))])


def summarize(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """The summary of one model's rows."""
    n = len(rows)
    tokens = [r["num_tokens"] for r in rows]
    by_task: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r["correct"])
    return {
        "rows": n,
        "accuracy": sum(r["correct"] for r in rows) / n,
        "format_rate": sum(r["format_ok"] for r in rows) / n,
        "accuracy_by_task": {t: sum(v) / len(v) for t, v in sorted(by_task.items())},
        "mean_tokens": sum(tokens) / n,
        "p95_tokens": _percentile(tokens, 0.95),
        "truncation_rate": sum(r["finish_reason"] == "length" for r in rows) / n,
        "tokens_per_s": sum(tokens) / seconds if seconds > 0 else 0.0,
    }


def run(config: Config, progress: bool = True) -> Result:
    from rftcli.generation import SamplingSettings, generate
    from rftcli.loading import default_device, load_model

    check_output(config.out, config.overwrite)
    data = read_table(config.dataset, "dataset")
    table = select_split(data.table, config.split)
    if config.limit is not None:
        table = table.slice(0, config.limit)
    if table.num_rows == 0:
        raise ValueError(f"{config.dataset}: no rows in split {config.split!r}")
    rewards = load_rewards(EVAL_REWARDS)
    prompts = table.to_pylist()
    settings = SamplingSettings(n=1, do_sample=False, max_new_tokens=config.max_new_tokens)
    inputs = {"dataset": config.dataset, **{f"model:{label}": m for label, m in zip(config.model_labels, config.models)}}
    manifest = make_manifest("eval", config, inputs, seed=config.seed)
    all_rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"split": config.split, "models": {}}
    for label, spec in zip(config.model_labels, config.models):
        loaded = load_model(spec, dtype=config.dtype, device=default_device(),
                            trust_remote_code=config.trust_remote_code)
        loaded.model.eval()
        rows: list[dict[str, Any]] = []
        start = time.perf_counter()
        with Progress(TextColumn(f"eval {label}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeRemainingColumn(), disable=not progress, transient=True) as bar:
            task = bar.add_task(label, total=len(prompts))
            for i in range(0, len(prompts), config.batch_size):
                batch = prompts[i:i + config.batch_size]
                for row, group in zip(batch, generate(loaded.model, loaded.processor, batch, settings)):
                    for j, s in enumerate(group):
                        base = {k: v for k, v in row.items() if k != "images"}
                        rows.append({**base, "model": label, "model_path": spec, "sample_index": j,
                                     "completion": s.text, "num_tokens": len(s.token_ids),
                                     "finish_reason": s.finish_reason})
                bar.advance(task, len(batch))
        seconds = time.perf_counter() - start
        columns = {k: [r[k] for r in rows] for k in rows[0]}
        per, _ = score_columns(rewards, columns["completion"], columns, errors={})
        for k, r in enumerate(rows):
            for name, values in per.items():
                r[f"reward_{name}"] = values[k]
            r["correct"] = per["accuracy"][k] == 1.0
            r["format_ok"] = per["format"][k] == 1.0
        summary["models"][label] = {"model": spec, **summarize(rows, seconds)}
        all_rows.extend(rows)
        del loaded
    with atomic_output(config.out, overwrite=config.overwrite, directory=True) as tmp:
        write_table(tmp / "results.parquet", "eval", all_rows, manifest, reward_names=[r.name for r in rewards])
        (tmp / "summary.json").write_text(json.dumps({**summary, "manifest": manifest}, indent=2) + "\n")
    return Result(path=config.out, summary=summary)
