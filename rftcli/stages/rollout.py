"""rollout: a `dataset` and a checkpoint in, a `rollouts` table out.

For every prompt of the chosen split it samples a group of `num_generations` completions and stores
each completion's token ids and per-token log-probs under the sampling distribution (after temperature,
top-k and top-p), plus the checkpoint's path and content hash so later stages can check which policy the
rows came from. Rows come out in dataset order: `group_index` is the prompt's position in the selected
split, `sample_index` its completion's position in the group.

How it runs (backend `hf`, transformers `generate`):
- Prompts are sorted by length (longest first, so an out-of-memory shows up in the first batch) and
  batched with left padding and the KV cache. `--batch-size auto` starts at 256 sequences per batch on a
  GPU (64 on a CPU) and halves the batch on out-of-memory; a number fixes it.
- Seeds are per row: completion j of prompt `id` samples under `row_seed(seed, id, j)` (recorded in the
  `seed` column), through a counter-based generator (see `rftcli.generation`). A rerun reproduces the
  same samples on the same hardware whatever the batch size, sort order, `--limit` or resume point; the
  price is the sampler's own softmax, float64 cumsum and searchsorted over [sequences, vocab] per
  decoding step, about what `generate`'s sampling costs (bench/rollout_overhead.py measures it).
- Stop strings end a completion at the token that completes one (finish_reason "stop", the string stays
  in the text), like eos; otherwise it ends at `max_new_tokens` ("length").
- Output is resumable: each finished batch is written as a shard into `<out>.parts/` (see
  `rftcli.shards`); a killed run restarted with the same settings skips the prompts already there and
  ends with the same table as an uninterrupted run. The batch size may change on resume (say, after an
  out-of-memory): the log-probs then move by float rounding (~1e-7 on a CPU) because padding and matrix
  shapes change, and so may a token whose draw lands within that rounding of a boundary. The final table is written atomically and the work folder removed.
- Image placeholder tokens are never drawn (a completion holding one cannot be scored with the prompt's
  images); stored log-probs stay those of the whole warped distribution (see `rftcli.generation`).
- `check_logprobs N` recomputes the stored log-probs of the first N groups with one teacher-forced forward
  pass each and reports the largest difference (float32 on a CPU: ~1e-6).

Backend `vllm` (optional extra `rftcli[vllm]`, CUDA only) takes the same settings and writes the same
schema; an adapter is served with vLLM's LoRA support on its base, never merged into it. It is UNTESTED:
see `rftcli.vllm_generation`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from rftcli.atomic import check_output
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
from rftcli.schema import read_table
from rftcli.shards import ShardedOutput

BACKENDS = ("hf", "vllm")
# Sequences (prompts x num_generations) per batch that --batch-size auto starts from.
AUTO_SEQUENCES = {"cuda": 256, "cpu": 64}
# vLLM schedules its own batches; it is handed this many sequences per shard.
VLLM_SHARD_SEQUENCES = 1024


@dataclass(frozen=True)
class Config:
    dataset: Path
    """Input dataset Parquet file."""
    model: str
    """Policy: hub id, local folder (full model or adapter) or builtin:NAME."""
    out: Path
    """Output rollouts Parquet file (work folder while running: <out>.parts/)."""
    base: str | None = None
    """Base model of an adapter (default: read from the adapter's manifest)."""
    split: str | None = "train"
    """Dataset split to sample (None or 'all' for every row)."""
    num_generations: int = 4
    """Completions per prompt (the group size G)."""
    temperature: float = 1.0
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1 = off)."""
    top_k: int = 0
    """Top-k sampling (0 = off)."""
    max_new_tokens: int = 64
    """Most tokens generated per completion."""
    max_prompt_length: int = DEFAULT_MAX_PROMPT_LENGTH
    """Most tokens a prompt may have, text and images (capped at the model's context length); longer is refused."""
    max_pixels: int | None = None
    """Shrink images above this many pixels (default: the processor's limit, at most 1,003,520)."""
    min_pixels: int | None = None
    """The processor enlarges images below this many pixels (default: the processor's own)."""
    stop: tuple[str, ...] = ()
    """Stop strings: a completion ends with the token that completes one (kept in the text)."""
    ignore_eos: bool = False
    """Generate past eos up to max_new_tokens (fixed-length benchmarks)."""
    batch_size: int | str = "auto"
    """Prompts per generate call, or 'auto': start large and halve on out-of-memory."""
    backend: str = "hf"
    """Generation backend: hf (transformers) or vllm (optional extra, CUDA only, untested)."""
    check_logprobs: int = 0
    """Recompute the stored log-probs of the first N groups with a forward pass; report the max difference."""
    limit: int | None = None
    """Use only the first N prompts of the split."""
    dtype: str = "auto"
    """Model dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint (off by default)."""
    allow_pickle: bool = False
    """Load weights stored only as pickle files (.bin/.pt), which can run code (off: safetensors only)."""
    seed: int = 0
    """Base seed; completion j of prompt id samples under row_seed(seed, id, j)."""
    overwrite: bool = False
    """Replace an existing output, and discard a work folder left by a run with other settings."""

    def __post_init__(self):
        if self.num_generations < 1 or self.max_new_tokens < 1:
            raise ValueError("num_generations and max_new_tokens must be at least 1")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 (use eval for greedy decoding)")
        if not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("top_p must be in (0, 1] and top_k >= 0")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; use {' or '.join(BACKENDS)}")
        if self.check_logprobs < 0:
            raise ValueError("check_logprobs must be >= 0")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1 (or unset), got {self.limit}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")
        check_limits(self.max_prompt_length, self.max_pixels, self.min_pixels)
        size = self.batch_size
        if isinstance(size, str) and size.strip().isdigit():
            size = int(size)
        if not (size == "auto" or (isinstance(size, int) and not isinstance(size, bool) and size >= 1)):
            raise ValueError(f"batch_size must be a positive number or 'auto', got {self.batch_size!r}")
        object.__setattr__(self, "batch_size", size)


@dataclass(frozen=True)
class Result:
    path: Path
    prompts: int
    """Prompts in the table."""
    rows: int
    """Completions in the table."""
    finish_reasons: dict[str, int]
    mean_tokens: float
    lengths: dict[str, float]
    """Completion length in tokens: min, mean, p50, p95, max."""
    resumed_prompts: int
    """Prompts found finished in the work folder of an earlier, killed run."""
    batch_size: int | None
    """Prompts per batch at the end (after any back-off); None when nothing was generated."""
    generated_tokens: int
    """Tokens generated by this process."""
    generate_seconds: float
    """Time spent encoding prompts and generating."""
    load_seconds: float
    """Time spent loading the model (0 when every prompt was already done)."""
    seconds: float
    """Wall time of the whole stage, model loading and writing included."""
    max_logprob_diff: float | None
    images_shrunk: int = 0
    """Images over the pixel budget shrunk before use."""
    """Largest |stored - recomputed| log-prob over the checked groups; None unless check_logprobs."""

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.generate_seconds if self.generate_seconds > 0 else 0.0


def select_split(table, split: str | None):
    import pyarrow.compute as pc

    if split in (None, "all"):
        return table
    return table.filter(pc.equal(table["split"], split))


def no_rows_in_split(path: Path, table, split: str | None) -> str:
    """The one-line error for a split that holds no row, naming the splits the table does hold: a small
    input (a dozen rows at --test-fraction 0.1) can hash none of its ids into test."""
    import pyarrow.compute as pc

    counts = {d["values"]: d["counts"] for d in pc.value_counts(table["split"]).to_pylist()} if table.num_rows else {}
    held = ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "no rows at all"
    return (f"{path}: no rows in split {split!r} (the table holds {held}); pass --split with one of those or "
            f"all, or convert with prepare-data --test-fraction/--val-fraction for a held-out split")


def used_rows(path: Path, split: str | None, limit: int | None = None):
    """The rows of the dataset table `path` that a stage uses: those of `split` (None or "all": every row),
    the first `limit` of them. The whole table is read and checked; images are decoded for these rows only
    (a `--limit 2` run does not decode a whole table's). Errors name the file, and the row as the file counts."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from rftcli.images import check_table_images

    table = read_table(path, "dataset").table
    if split in (None, "all"):
        rows = list(range(table.num_rows))
    else:
        rows = pc.indices_nonzero(pc.equal(table["split"], split)).to_pylist()
    rows = rows[:limit] if limit is not None else rows
    if not rows:
        raise ValueError(no_rows_in_split(path, table, split))
    used = table.take(pa.array(rows, pa.int64()))
    check_table_images(path, used, rows=rows)
    return used


def length_summary(lengths: Sequence[int]) -> dict[str, float]:
    """min, mean, p50, p95 and max of completion lengths (nearest-rank percentiles)."""
    if not lengths:
        return {}
    ordered = sorted(lengths)

    def rank(q: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))])

    return {"min": float(ordered[0]), "mean": sum(ordered) / len(ordered), "p50": rank(0.5), "p95": rank(0.95),
            "max": float(ordered[-1])}


# ---------------------------------------------------------------- batching with back-off

def is_out_of_memory(err: BaseException) -> bool:
    import torch

    text = str(err).lower()
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


def _release_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def in_batches(items: Sequence[Any], size: int, fn: Callable[[Sequence[Any]], Any], *, back_off: bool
               ) -> Iterator[tuple[Sequence[Any], Any, int]]:
    """Call `fn` on consecutive batches of `items`, yielding (batch, fn(batch), batch size).

    On out-of-memory the same items are retried in a batch half the size (`back_off`), and later batches
    keep the smaller size; without back-off, or at one item, it stops with a hint."""
    i = 0
    while i < len(items):
        batch = items[i:i + size]
        try:
            result = fn(batch)
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            _release_memory()
            if not back_off:
                raise ValueError(f"out of memory at --batch-size {size}; pass a smaller --batch-size or "
                                 "--batch-size auto") from None
            if size == 1:
                raise ValueError("out of memory with one prompt per batch; lower --max-new-tokens or "
                                 "--num-generations, or use a smaller --dtype") from None
            size = max(1, size // 2)
            continue
        yield batch, result, size
        i += len(batch)


# ---------------------------------------------------------------- policies

class HFPolicy:
    """transformers `generate` on the loaded checkpoint (an adapter runs on its base through PEFT)."""

    backend = "hf"

    def __init__(self, config: Config):
        from rftcli.loading import default_device, load_model

        self.loaded = load_model(config.model, base=config.base, dtype=config.dtype, device=default_device(),
                                 trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle)
        self.model = self.loaded.model.eval()
        self.processor = self.loaded.processor
        apply_image_budget(self.processor, config.max_pixels, config.min_pixels)
        self.device = next(self.model.parameters()).device

    def auto_batch(self, n: int) -> int:
        return max(1, AUTO_SEQUENCES["cuda" if self.device.type == "cuda" else "cpu"] // n)

    def reserve(self, max_prompt_tokens: int, max_new_tokens: int, max_images: int) -> None:
        pass  # generate allocates per batch

    def generate(self, rows, settings, seeds: Sequence[Sequence[int]]):
        import torch

        from rftcli.generation import encode_prompts, encode_repeated, generate_encoded, repeat_prompts

        repeat = repeat_prompts(self.device, settings.n)
        with torch.no_grad():
            inputs = (encode_repeated(self.processor, rows, settings.n, self.device) if repeat
                      else encode_prompts(self.processor, rows, self.device))
            flat = generate_encoded(self.model, self.processor, inputs, settings, [s for g in seeds for s in g],
                                    repeated=repeat)
        return [flat[b * settings.n:(b + 1) * settings.n] for b in range(len(rows))]

    def close(self) -> None:
        pass


def _load_policy(config: Config):
    if config.backend == "vllm":
        from rftcli.vllm_generation import VLLMPolicy

        return VLLMPolicy(config.model, base=config.base, dtype=config.dtype,
                          trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle)
    return HFPolicy(config)


def _resume_key(config: Config, manifest: dict[str, Any]) -> dict[str, Any]:
    """What decides the rows: inputs by content, the sampling settings and the libraries that compute
    them. Batch size, check_logprobs and overwrite do not change a row, so they may differ on resume."""
    settings = ("base", "split", "limit", "num_generations", "temperature", "top_p", "top_k", "max_new_tokens",
                "max_pixels", "min_pixels", "stop", "ignore_eos", "backend", "dtype", "trust_remote_code", "seed")
    packages = {k: v for k, v in manifest["packages"].items()
                if k in ("rftcli", "torch", "transformers", "peft", "vllm")}
    return {"stage": "rollout", "inputs": {k: v["hash"] for k, v in manifest["inputs"].items()},
            "settings": {k: manifest["config"][k] for k in settings}, "packages": packages}


def _progress_bar(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("rollout"), BarColumn(), TextColumn("{task.completed}/{task.total} prompts"),
                    TextColumn("{task.fields[pps]:.2f} prompts/s"), TextColumn("{task.fields[tps]:.0f} tokens/s"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                    disable=not enabled, transient=True)


# ---------------------------------------------------------------- the stage

def run(config: Config, progress: bool = True) -> Result:
    from rftcli.generation import SamplingSettings, prompt_length, row_seed

    started = time.perf_counter()
    if config.backend == "vllm":
        from rftcli.vllm_generation import require_vllm

        require_vllm()
    check_output(config.out, config.overwrite, inputs=[config.dataset, config.model, config.base])
    refuse("rollout", config.model, config.base)  # a family the stack cannot run, before any work
    table = used_rows(config.dataset, config.split, config.limit)
    manifest = make_manifest("rollout", config, {"dataset": config.dataset, "model": config.model}, seed=config.seed)
    policy_hash = manifest["inputs"]["model"]["hash"]  # content hash (a hub id or built-in name: as given)
    settings = SamplingSettings(n=config.num_generations, do_sample=True, temperature=config.temperature,
                                top_p=config.top_p, top_k=config.top_k, max_new_tokens=config.max_new_tokens,
                                stop=tuple(config.stop), ignore_eos=config.ignore_eos)
    # Before any weights load: images over the pixel budget shrunk, every prompt within the prompt budget.
    budget = PromptBudget(config.model, base=config.base, trust_remote_code=config.trust_remote_code,
                          allow_pickle=config.allow_pickle, max_prompt_length=config.max_prompt_length,
                          max_pixels=config.max_pixels, min_pixels=config.min_pixels)
    shrinker = ImageShrinker(budget.max_pixels)
    table = shrinker.table(table)
    prompts = table.to_pylist()
    budget.check(config.dataset, prompts, row_positions(config.dataset))
    constant = {"policy": config.model, "policy_hash": policy_hash, "backend": config.backend,
                "temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k,
                "max_new_tokens": config.max_new_tokens}
    policy = None
    batch_size: int | None = None
    generated = 0
    generate_seconds = load_seconds = 0.0
    with ShardedOutput(config.out, "rollouts", _resume_key(config, manifest), ("group_index",),
                       overwrite=config.overwrite) as shards:
        todo = [i for i in range(len(prompts)) if (i,) not in shards.done]
        resumed = len(prompts) - len(todo)
        if todo:
            t_load = time.perf_counter()
            policy = _load_policy(config)
            load_seconds = time.perf_counter() - t_load
            lengths = {i: prompt_length(policy.processor, prompts[i]) for i in todo}
            todo.sort(key=lambda i: (-lengths[i], i))  # longest first; ties in dataset order
            policy.reserve(lengths[todo[0]], settings.max_new_tokens,
                           max(len(prompts[i]["images"] or []) for i in todo))
            if config.backend == "vllm":
                size, back_off = (config.batch_size if config.batch_size != "auto"
                                  else max(1, VLLM_SHARD_SEQUENCES // settings.n)), False
            else:
                size, back_off = ((policy.auto_batch(settings.n), True) if config.batch_size == "auto"
                                  else (config.batch_size, False))

            def sample(batch: Sequence[int]):
                nonlocal generate_seconds
                t0 = time.perf_counter()
                seeds = [[row_seed(config.seed, prompts[i]["id"], j) for j in range(settings.n)] for i in batch]
                groups = policy.generate([prompts[i] for i in batch], settings, seeds)
                generate_seconds += time.perf_counter() - t0
                return seeds, groups

            with _progress_bar(progress) as bar:
                task = bar.add_task("rollout", total=len(prompts), completed=resumed, pps=0.0, tps=0.0)
                done_here = 0
                batches = in_batches(todo, min(size, len(todo)), sample, back_off=back_off)
                for batch, (seeds, groups), used in batches:
                    batch_size = used
                    rows = []
                    for i, group_seeds, group in zip(batch, seeds, groups, strict=True):
                        for j, (s, seed) in enumerate(zip(group, group_seeds, strict=True)):
                            generated += len(s.token_ids)
                            rows.append({**prompts[i], "group_index": i, "sample_index": j, "completion": s.text,
                                         "completion_ids": s.token_ids, "logprobs": s.logprobs,
                                         "num_tokens": len(s.token_ids), "finish_reason": s.finish_reason,
                                         **constant, "seed": seed})
                    shards.write(rows, manifest)
                    done_here += len(batch)
                    bar.update(task, advance=len(batch), pps=done_here / generate_seconds,
                               tps=generated / generate_seconds)
        shards.finish(manifest, sort_by=["group_index", "sample_index"])
    max_diff = None
    if config.check_logprobs:
        if policy is None or policy.backend != "hf":
            if policy is not None:
                policy.close()
            policy = HFPolicy(config)
        max_diff = check_logprobs(config.out, policy.model, policy.processor, config.check_logprobs)
    if policy is not None:
        policy.close()
    final = pq.read_table(config.out, columns=["num_tokens", "finish_reason"])  # written and checked above
    reasons: dict[str, int] = {}
    for r in final.column("finish_reason").to_pylist():
        reasons[r] = reasons.get(r, 0) + 1
    spread = length_summary(final.column("num_tokens").to_pylist())
    return Result(path=config.out, prompts=len(prompts), rows=final.num_rows,
                  finish_reasons=dict(sorted(reasons.items())), mean_tokens=spread["mean"], lengths=spread,
                  resumed_prompts=resumed, batch_size=batch_size,
                  generated_tokens=generated, generate_seconds=generate_seconds, load_seconds=load_seconds,
                  seconds=time.perf_counter() - started, max_logprob_diff=max_diff,
                  images_shrunk=shrinker.shrunk)


def check_logprobs(path: str | Path, model: Any, processor: Any, groups: int) -> float:
    """Recompute the stored log-probs of the first `groups` groups of a rollouts table with one
    teacher-forced forward pass per group, under each row's recorded sampling settings; returns the
    largest absolute difference."""
    import pyarrow.compute as pc

    from rftcli.generation import SamplingSettings, teacher_forced_logprobs

    table = read_table(path, "rollouts").table
    first = sorted(set(table.column("group_index").to_pylist()))[:groups]
    worst = 0.0
    for g in first:
        rows = table.filter(pc.equal(table["group_index"], g)).to_pylist()
        r0 = rows[0]
        settings = SamplingSettings(n=len(rows), temperature=r0["temperature"], top_p=r0["top_p"], top_k=r0["top_k"],
                                    max_new_tokens=r0["max_new_tokens"])
        again = teacher_forced_logprobs(model, processor, r0, [r["completion_ids"] for r in rows], settings)
        for r, lps in zip(rows, again, strict=True):
            worst = max([worst] + [abs(a - b) for a, b in zip(r["logprobs"], lps, strict=True)])
    return worst
