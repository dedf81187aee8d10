"""eval: one or more checkpoints on one or more `dataset`s under one or more prompts, scored with the
reward library, compared side by side.

Reads `dataset` Parquet files (evaluation sets, each under a label) and models (hub ids, folders, adapters,
builtin:NAME). Writes a folder:

    results.parquet   the `eval` table: one row per model, set, prompt variant, prompt and sample
    summary.json      per model (on the first set under the first prompt variant): accuracy (= pass@1) overall and by task / category / answer type,
                      pass@k and maj@k, strict-format rate, mean reward per reward function, mean and p95
                      response length, truncation rate, tokens/s; deltas of every model against the
                      first; flips (prompts that went wrong -> right or right -> wrong) between
                      consecutive models; per model, how many evaluated rows it or a model it was
                      trained from trained on and the accuracy on the others (`contamination`,
                      `rftcli.contamination`); the resolved config (`manifest`); `grid`, one cell
                      per (model, set, prompt variant), with `sets` and `prompts` (`rftcli.eval_grid`)
    flips.json        the flipped prompts with both models' answers, for reading
    report.md         the same as tables, with PNG charts when matplotlib is installed (`rftcli.report`)

Greedy decoding by default; `samples=k` draws k completions per prompt at `temperature` for pass@k and
maj@k (`rftcli.metrics` defines both). Completion j of prompt `id` samples under
`row_seed(seed, id, j)` (`rftcli.generation`), so every model draws with the same seeds and a resumed
run reproduces the same samples. A row is correct when the scorer reward (`accuracy` unless a preset
says otherwise: the answer slot only) is 1.0; `summary.json` also gives strict and lenient accuracy side by
side (`accuracy_rule`). Presets (`rftcli.benchmarks`) set the scorer, prompts, split and length for
common benchmarks. Prompt variants (`rftcli.prompt_variants`: dataset, direct, think, NAME=TEXT) ask the
same rows in other words; direct-answer variants are scored by the direct-answer rule (`rftcli.eval_grid`).

Resuming works as in `rollout` (`rftcli.shards`): each finished batch of each model is scored and
written as a shard into `<out>.parts/`; a killed run restarted with the same settings and models skips
the (model, set, prompt variant, prompt) items already there, and loads no model whose prompts are all done. The output
folder is written atomically at the end and the work folder removed. tokens/s counts generation time
recorded in the shards, so it survives a resume.
"""

from __future__ import annotations

import gc
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from rftcli.atomic import atomic_output, check_output
from rftcli.contamination import eval_report, table_hashes
from rftcli.eval_grid import EvalSet, grid_cell, rule_rewards, vote_mode
from rftcli.families.support import refuse
from rftcli.limits import (
    DEFAULT_MAX_PROMPT_LENGTH,
    ImageShrinker,
    PromptBudget,
    apply_image_budget,
    check_limits,
    row_positions,
)
from rftcli.manifest import make_manifest
from rftcli.schema import inspect_file, write_table
from rftcli.shards import ShardedOutput
from rftcli.stages.rollout import in_batches, used_rows
from rftcli.stages.score import load_rewards, score_columns

DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_SPLIT = "test"
DEFAULT_CATEGORY_KEY = "category"


@dataclass(frozen=True)
class Config:
    dataset: tuple[Path, ...]
    """Evaluation sets: dataset Parquet files (one, or several in a list). The first is the one the per-model
    summary, flips and deltas describe."""
    models: tuple[str, ...]
    """Models to evaluate: hub ids, folders (full or adapter) or builtin:NAME. The first is the baseline."""
    out: Path
    """Output folder (results.parquet, summary.json, flips.json, report.md, charts)."""
    labels: tuple[str, ...] = ()
    """Names for the models in tables (default: the folder name or the argument)."""
    set_labels: tuple[str, ...] = ()
    """Names for the evaluation sets, one per dataset in order (default: each file's stem)."""
    prompts: tuple[str, ...] = ("dataset",)
    """Prompt variants: dataset (as stored), direct (direct-answer control), think, or NAME=TEXT (TEXT in
    place of the instruction; with {question}: a template). The first is the one the per-model summary uses."""
    preset: str | None = None
    """Benchmark preset: mathvista, geometry3k, clevr-count, refcoco (sets the settings left unset)."""
    split: str | None = None
    """Dataset split to evaluate, or 'all' (default: test; presets: all)."""
    samples: int = 1
    """Completions per prompt: 1 = greedy; k > 1 samples k at `temperature` for pass@k and maj@k."""
    temperature: float = 1.0
    """Sampling temperature when samples > 1."""
    top_p: float = 1.0
    """Nucleus sampling threshold when samples > 1 (1 = off)."""
    max_new_tokens: int | None = None
    """Most tokens generated per answer (default 64; presets give reasoning room)."""
    scorer: str | None = None
    """Reward whose 1.0 marks a correct answer (default accuracy; presets may use their own)."""
    rewards: tuple[str, ...] = ()
    """Further reward functions whose means are reported (NAME, pkg.module:fn or file.py:fn)."""
    category_key: str | None = None
    """Column or metadata field (dotted for nested; metadata.NAME for a field a column shadows) for accuracy by
    category (default: category)."""
    metrics: tuple[Path, ...] = ()
    """Training metrics.jsonl files (sft-coldstart, train-grpo) for reward/KL curves in the report."""
    batch_size: int = 16
    """Prompts per generate call (halved on out-of-memory)."""
    limit: int | None = None
    """Use only the first N prompts of the split."""
    dtype: str = "auto"
    """Model dtype: auto, float32, bfloat16, float16."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint."""
    allow_pickle: bool = False
    """Load weights stored only as pickle files (.bin/.pt), which can run code (off: safetensors only)."""
    max_prompt_length: int = DEFAULT_MAX_PROMPT_LENGTH
    """Most tokens a prompt may have, text and images (capped at each model's context length); longer is refused."""
    max_pixels: int | None = None
    """Shrink images above this many pixels (default: the processor's limit, at most 1,003,520)."""
    min_pixels: int | None = None
    """The processor enlarges images below this many pixels (default: the processor's own)."""
    seed: int = 0
    """Sampling seed: completion j of prompt id samples under row_seed(seed, id, j) (greedy: unused)."""
    overwrite: bool = False
    """Replace an existing output, and discard a work folder left by a run with other settings."""

    def __post_init__(self):
        if isinstance(self.dataset, (str, Path)):  # one set
            object.__setattr__(self, "dataset", (Path(self.dataset),))
        if not self.dataset:
            raise ValueError("give at least one --dataset")
        if self.set_labels and len(self.set_labels) != len(self.dataset):
            raise ValueError(f"got {len(self.set_labels)} set labels for {len(self.dataset)} datasets")
        if len(set(self.set_names)) != len(self.dataset):
            raise ValueError(f"set labels must be unique, got {', '.join(self.set_names)}; pass --set-label")
        from rftcli.prompt_variants import parse_variants

        parse_variants(self.prompts)  # an unknown or repeated variant: one line, before any work
        if not self.models:
            raise ValueError("give at least one --model")
        if self.labels and len(self.labels) != len(self.models):
            raise ValueError(f"got {len(self.labels)} labels for {len(self.models)} models")
        if len(set(self.model_labels)) != len(self.models):
            raise ValueError(f"model labels must be unique, got {', '.join(self.model_labels)}; pass --label")
        if self.samples < 1 or self.batch_size < 1 or (self.max_new_tokens is not None and self.max_new_tokens < 1):
            raise ValueError("samples, batch_size and max_new_tokens must be at least 1")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be > 0 and top_p in (0, 1]")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1 (or unset), got {self.limit}")
        check_limits(self.max_prompt_length, self.max_pixels, self.min_pixels)
        # Settings left unset take the preset's choice, else the defaults; the manifest records the result.
        from rftcli.benchmarks import get_preset

        preset = get_preset(self.preset) if self.preset else None
        resolved = {
            "split": preset.split if preset else DEFAULT_SPLIT,
            "max_new_tokens": preset.max_new_tokens if preset else DEFAULT_MAX_NEW_TOKENS,
            "scorer": preset.scorer if preset else "accuracy",
            "category_key": preset.category_key if preset else DEFAULT_CATEGORY_KEY,
        }
        for name, value in resolved.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if preset and not self.rewards:
            object.__setattr__(self, "rewards", preset.rewards)

    @property
    def set_names(self) -> list[str]:
        return list(self.set_labels) if self.set_labels else [Path(p).stem for p in self.dataset]

    @property
    def model_labels(self) -> list[str]:
        if self.labels:
            return list(self.labels)
        return short_labels(self.models)


def short_labels(models: Sequence[str]) -> list[str]:
    """A column label per model spec: a folder's name (out/grpo -> grpo), a hub id's name
    (Qwen/Qwen2.5-VL-3B-Instruct -> Qwen2.5-VL-3B-Instruct), a built-in's name (builtin:NAME -> NAME); where
    two would clash, one more part of the path or id (runs/a/grpo -> a/grpo)."""
    parts = [list(Path(m).resolve().parts) if Path(m).exists() else m.removeprefix("builtin:").rstrip("/").split("/")
             for m in models]
    names = [p[-1] for p in parts]
    clashing = {name for name in names if names.count(name) > 1}
    return ["/".join(p[-2:]) if p[-1] in clashing else p[-1] for p in parts]


@dataclass(frozen=True)
class Result:
    path: Path
    summary: dict[str, Any]
    images_shrunk: int = 0
    """Images over the pixel budget shrunk before use."""


def reward_specs(config: Config) -> list[str]:
    """The scorer, the strict format reward, `accuracy_lenient` when the scorer is `accuracy` (so strict and
    lenient accuracy are reported side by side), then the extra rewards (names made unique by dropping repeats)."""
    from rftcli.rewards import parse_weighted, reward_name

    specs, names = [], set()
    lenient = ["accuracy_lenient"] if config.scorer.strip() == "accuracy" else []
    for spec, _ in parse_weighted([config.scorer, "format", *lenient, *config.rewards]):  # weights mean nothing here
        if reward_name(spec) not in names:
            specs.append(spec)
            names.add(reward_name(spec))
    return specs


def accuracy_rule(summary: dict[str, Any]) -> dict[str, Any]:
    """Strict and lenient accuracy per model side by side, and which one `correct` and the headline use:
    benchmarks differ on whether an answer outside the answer slot counts."""
    means = {label: s["mean_reward"] for label, s in summary["models"].items()}
    return {"correct": summary["scorer"], "headline": "accuracy: the share of rows marked correct",
            "strict": {label: s["accuracy"] for label, s in summary["models"].items()},
            "lenient": {label: m.get("accuracy_lenient") for label, m in means.items()},
            "note": "strict: the share correct by the scorer (`accuracy` reads the answer slot only: <answer>, "
                    "else \\boxed{}); lenient: `accuracy_lenient`, which also takes the last choice phrase or "
                    "whole-token number outside the slot (null unless the scorer is `accuracy`)"}


def resume_key(config: Config, manifest: dict[str, Any]) -> dict[str, Any]:
    """What decides the rows: inputs by content (each model and set under its label), the sets' labels, the
    prompt variants, the decoding and scoring settings and the libraries that compute them. Batch size,
    category key and metrics files do not change a row, so they may differ on resume."""
    settings = ["preset", "split", "limit", "samples", "max_new_tokens", "scorer", "rewards", "dtype",
                "trust_remote_code", "max_pixels", "min_pixels", "prompts"]
    if config.samples > 1:  # greedy decoding ignores them
        settings += ["temperature", "top_p", "seed"]
    packages = {k: v for k, v in manifest["packages"].items() if k in ("torch", "transformers", "peft")}
    return {"stage": "eval", "inputs": {k: v["hash"] for k, v in manifest["inputs"].items()},
            "settings": {**{k: manifest["config"][k] for k in settings}, "sets": config.set_names},
            "packages": packages}


def _prompts(config: Config, table, path: Path) -> tuple[list[dict[str, Any]], int]:
    """The rows to evaluate, prompts as the preset builds them, and how many rows the preset skipped."""
    from rftcli.benchmarks import build_prompt, get_preset, select_rows

    rows = table.to_pylist()
    if not config.preset:
        return rows, 0
    preset = get_preset(config.preset)
    kept = select_rows(preset, rows, str(path))
    if not kept:
        raise ValueError(f"{path}: no rows with answer_type {', '.join(preset.answer_types)} "
                         f"for preset {preset.name}")
    return [{**r, "prompt": build_prompt(preset, r)} for r in kept], len(rows) - len(kept)


def _load_sets(config: Config, variants, budgets, shrinker: ImageShrinker) -> list[EvalSet]:
    """Every set's rows as each variant asks them, images within the pixel budget and every prompt within each
    model's budget: checked before any weights load."""
    sets = []
    for label, path in zip(config.set_names, config.dataset, strict=True):
        table = used_rows(path, config.split, config.limit)
        hash_of = dict(zip(table["id"].to_pylist(), table_hashes(table), strict=True))  # for contamination
        prompts, skipped = _prompts(config, table, path)
        prompts = [{**p, "images": shrinker.images(p["images"])} for p in prompts]
        asked = {v.name: [v.apply(p) for p in prompts] for v in variants}
        positions = row_positions(path)
        for budget in budgets:
            for rows in asked.values():
                budget.check(path, rows, positions)
        sets.append(EvalSet(label, Path(path), asked, hash_of, skipped))
    return sets


def _evaluate(config: Config, label: str, spec: str, groups: Sequence[tuple[str, str, list[dict[str, Any]], list]],
              shards: ShardedOutput, manifest: dict[str, Any], progress: bool, done: int, total: int) -> None:
    """Generate, score and write one model's remaining prompts, a shard per batch of one (set, prompt variant)
    group, scored with that variant's rewards. Each shard's manifest records its generation seconds, so
    tokens/s can be summed over a resumed run."""
    import torch

    from rftcli.generation import SamplingSettings, generate
    from rftcli.loading import default_device, load_model

    greedy = config.samples == 1
    settings = SamplingSettings(n=config.samples, do_sample=not greedy, temperature=config.temperature,
                                top_p=config.top_p, max_new_tokens=config.max_new_tokens)
    loaded = load_model(spec, dtype=config.dtype, device=default_device(), trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle)
    apply_image_budget(loaded.processor, config.max_pixels, config.min_pixels)
    model = loaded.model.eval()

    def sample(batch):
        t0 = time.perf_counter()
        groups = generate(model, loaded.processor, batch, settings, seed=None if greedy else config.seed)
        return groups, time.perf_counter() - t0

    with Progress(TextColumn(f"eval {label}"), BarColumn(), TextColumn("{task.completed}/{task.total} prompts"),
                  TimeRemainingColumn(), disable=not progress, transient=True) as bar:
        task = bar.add_task(label, total=total, completed=done)
        for set_label, variant, prompts, rewards in groups:
            scorer = rewards[0].name
            for batch, (completions, seconds), _ in in_batches(prompts, config.batch_size, sample, back_off=True):
                rows = []
                for row, group in zip(batch, completions, strict=True):
                    base = {k: v for k, v in row.items() if k != "images"}
                    for j, s in enumerate(group):
                        rows.append({**base, "model": label, "model_path": spec, "set": set_label,
                                     "prompt_variant": variant, "sample_index": j, "completion": s.text,
                                     "num_tokens": len(s.token_ids), "finish_reason": s.finish_reason})
                columns = {k: [r[k] for r in rows] for k in rows[0]}
                per, _ = score_columns(rewards, columns["completion"], columns, errors={})
                for k, r in enumerate(rows):
                    for name, values in per.items():
                        r[f"reward_{name}"] = values[k]
                    r["correct"] = per[scorer][k] == 1.0
                    r["format_ok"] = per["format"][k] == 1.0
                shard = {"model": label, "set": set_label, "prompt": variant, "seconds": seconds}
                shards.write(rows, {**manifest, "shard": shard})
                bar.advance(task, len(batch))
    model = loaded = None  # free the weights before the next model loads
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def shard_seconds(shards: ShardedOutput) -> dict[tuple[str, str, str], float]:
    """Generation seconds per (model label, set, prompt variant), summed over the shards' manifests."""
    out: dict[tuple[str, str, str], float] = {}
    for part in shards.parts():
        shard = inspect_file(part, ("eval",))[1]["shard"]
        key = (shard["model"], shard["set"], shard["prompt"])
        out[key] = out.get(key, 0.0) + shard["seconds"]
    return out


def flip_details(outcomes: dict[str, dict[str, tuple[bool, str | None]]], rows_by_model: dict[str, list[dict]],
                 flips: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each flipped prompt with its ground truth and both models' (voted) answers."""
    info = {r["id"]: r for rows in rows_by_model.values() for r in rows if r["sample_index"] == 0}
    out = []
    for f in flips:
        for change in ("wrong_to_right", "right_to_wrong"):
            for pid in f[change]:
                r = info[pid]
                out.append({"id": pid, "from": f["from"], "to": f["to"], "change": change.replace("_to_", "->"),
                            "task": r["task"], "answer": r["answer"], "answer_type": r["answer_type"],
                            "from_answer": outcomes[f["from"]][pid][1], "to_answer": outcomes[f["to"]][pid][1]})
    return out


def run(config: Config, progress: bool = True) -> Result:
    from rftcli import metrics
    from rftcli.loading import check_model
    from rftcli.prompt_variants import parse_variants
    from rftcli.report import read_training_metrics, write_report

    check_output(config.out, config.overwrite, inputs=[*config.dataset, *config.models, *config.metrics])
    for path in config.metrics:  # fail before hours of generation, not after
        read_training_metrics(path)
    variants = parse_variants(config.prompts)
    rewards = load_rewards(reward_specs(config))
    reward_names = [r.name for r in rewards]
    scoring = {v.name: rule_rewards(rewards, v) for v in variants}  # variant -> (rewards, rule)
    for spec in config.models:  # every model's files, before the first is evaluated
        check_model(spec, trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle)
        refuse("eval", spec)  # a family the stack cannot run
    # Before any weights load: images over the pixel budget shrunk, every prompt within each model's budget.
    budgets = [PromptBudget(spec, max_prompt_length=config.max_prompt_length, max_pixels=config.max_pixels,
                            min_pixels=config.min_pixels, trust_remote_code=config.trust_remote_code,
                            allow_pickle=config.allow_pickle)
               for spec in config.models]
    shrinker = ImageShrinker(max(b.max_pixels for b in budgets))
    sets = _load_sets(config, variants, budgets, shrinker)
    labels = config.model_labels
    datasets = ({"dataset": sets[0].path} if len(sets) == 1 else {f"dataset:{s.label}": s.path for s in sets})
    inputs = {**datasets, **{f"model:{label}": m for label, m in zip(labels, config.models, strict=True)}}
    manifest = make_manifest("eval", config, inputs, seed=config.seed)

    cells = [(s, v) for s in sets for v in variants]
    resumed: dict[tuple[str, str, str], bool] = {}
    with ShardedOutput(config.out, "eval", resume_key(config, manifest), ("model", "set", "prompt_variant", "id"),
                       reward_names=reward_names, overwrite=config.overwrite) as shards:
        total = sum(len(s.prompts[v.name]) for s, v in cells)
        for label, spec in zip(labels, config.models, strict=True):
            groups = []
            for s, v in cells:
                todo = [p for p in s.prompts[v.name] if (label, s.label, v.name, p["id"]) not in shards.done]
                resumed[(label, s.label, v.name)] = len(todo) < len(s.prompts[v.name])
                if todo:
                    groups.append((s.label, v.name, todo, scoring[v.name][0]))
            if groups:
                _evaluate(config, label, spec, groups, shards, manifest, progress,
                          done=total - sum(len(g[2]) for g in groups), total=total)
        seconds = shard_seconds(shards)
        order = {key: i for i, key in enumerate((m, s.label, v.name) for m in labels for s, v in cells)}
        position = {(s.label, p["id"]): i for s in sets for i, p in enumerate(next(iter(s.prompts.values())))}
        all_rows = sorted(shards.read(sort_by=["sample_index"]).to_pylist(),
                          key=lambda r: (order[(r["model"], r["set"], r["prompt_variant"])],
                                         position[(r["set"], r["id"])], r["sample_index"]))
        rows_by_cell: dict[tuple[str, str, str], list[dict[str, Any]]] = {key: [] for key in order}
        for r in all_rows:
            rows_by_cell[(r["model"], r["set"], r["prompt_variant"])].append(r)

        first = (sets[0].label, variants[0].name)
        rows_by_model = {label: rows_by_cell[(label, *first)] for label in labels}
        summary: dict[str, Any] = {
            "dataset": str(sets[0].path), "split": config.split, "preset": config.preset,
            "skipped_rows": sets[0].skipped, "samples": config.samples, "temperature": config.temperature,
            "top_p": config.top_p, "max_new_tokens": config.max_new_tokens, "scorer": reward_names[0], "models": {},
            "sets": {s.label: {"path": str(s.path), "split": config.split, "rows": s.rows, "skipped_rows": s.skipped}
                     for s in sets},
            "prompts": {v.name: v.describe() for v in variants}, "grid": []}
        for label, spec in zip(labels, config.models, strict=True):
            for s, v in cells:
                key, rule = (label, s.label, v.name), scoring[v.name][1]
                full = metrics.summarize(rows_by_cell[key], seconds.get(key, 0.0), config.category_key,
                                         reward_names, vote_mode(rule))
                contamination = eval_report(spec, rows_by_cell[key], s.hash_of)
                summary["grid"].append(grid_cell(label, s.label, v.name, rule, full, contamination, resumed[key]))
                if (s.label, v.name) == first:
                    summary["models"][label] = {"model": spec, "resumed": any(
                        resumed[(label, c.label, w.name)] for c, w in cells), **full, "contamination": contamination}
        summary["accuracy_rule"] = accuracy_rule(summary)
        summary["accuracy_rule"]["first_cell"] = {"set": first[0], "prompt": first[1],
                                                  "rule": scoring[variants[0].name][1]}
        mode = vote_mode(scoring[variants[0].name][1])
        outcomes = {label: metrics.prompt_outcomes(rows, mode) for label, rows in rows_by_model.items()}
        summary["comparison"] = metrics.compare(summary["models"])
        summary["flips"] = metrics.flip_summary(outcomes)
        with atomic_output(config.out, overwrite=config.overwrite, directory=True) as tmp:
            write_table(tmp / "results.parquet", "eval", all_rows, manifest, reward_names=reward_names)
            details = flip_details(outcomes, rows_by_model, summary["flips"])
            (tmp / "flips.json").write_text(json.dumps(details, indent=1) + "\n")
            lengths = {label: [r["num_tokens"] for r in rows] for label, rows in rows_by_model.items()}
            summary["report"] = write_report(tmp, summary, lengths, config.metrics)
            summary = _no_nan(summary)
            (tmp / "summary.json").write_text(json.dumps({**summary, "manifest": manifest}, indent=2) + "\n")
        shards.remove()
    return Result(path=config.out, summary=summary, images_shrunk=shrinker.shrunk)


def _no_nan(value: Any) -> Any:
    """NaN (a rate over no rows, a reward that always abstained) as null: strict JSON readers refuse NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value

