"""rollout: a `dataset` and a checkpoint in, a `rollouts` table out.

For every prompt of the chosen split it samples a group of `num_generations` completions with
transformers `generate` and stores each completion's token ids and per-token log-probs under the
sampling distribution (after temperature / top-k / top-p), plus the checkpoint's path and content hash
so `train-grpo --rollouts` can check the rows came from the policy it trains.

Seeds: each batch of prompts is sampled under `seed + batch index`, recorded per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from rftcli.manifest import make_manifest
from rftcli.schema import TableWriter, read_table


@dataclass(frozen=True)
class Config:
    dataset: Path
    """Input dataset Parquet file."""
    model: str
    """Policy: hub id, local folder (full model or adapter) or builtin:NAME."""
    out: Path
    """Output rollouts Parquet file."""
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
    batch_size: int = 8
    """Prompts per generate call (each expands to num_generations sequences)."""
    limit: int | None = None
    """Use only the first N prompts of the split."""
    dtype: str = "auto"
    """Model dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint (off by default)."""
    seed: int = 0
    """Base seed; batch i samples under seed + i."""
    overwrite: bool = False
    """Replace an existing output."""

    def __post_init__(self):
        if self.num_generations < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("num_generations, batch_size and max_new_tokens must be at least 1")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 (use eval for greedy decoding)")
        if not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("top_p must be in (0, 1] and top_k >= 0")


@dataclass(frozen=True)
class Result:
    path: Path
    prompts: int
    rows: int
    finish_reasons: dict[str, int]
    mean_tokens: float


def select_split(table, split: str | None):
    import pyarrow.compute as pc

    if split in (None, "all"):
        return table
    return table.filter(pc.equal(table["split"], split))


def run(config: Config, progress: bool = True) -> Result:
    from rftcli.generation import SamplingSettings, generate
    from rftcli.loading import default_device, load_model

    data = read_table(config.dataset, "dataset")
    table = select_split(data.table, config.split)
    if config.limit is not None:
        table = table.slice(0, config.limit)
    if table.num_rows == 0:
        raise ValueError(f"{config.dataset}: no rows in split {config.split!r}")
    manifest = make_manifest("rollout", config, {"dataset": config.dataset, "model": config.model}, seed=config.seed)
    policy = manifest["inputs"]["model"]  # path and content hash (a hub id or built-in name: as given)
    loaded = load_model(config.model, base=config.base, dtype=config.dtype, device=default_device(),
                        trust_remote_code=config.trust_remote_code)
    loaded.model.eval()
    settings = SamplingSettings(n=config.num_generations, do_sample=True, temperature=config.temperature,
                                top_p=config.top_p, top_k=config.top_k, max_new_tokens=config.max_new_tokens)
    rows = table.to_pylist()
    reasons: dict[str, int] = {}
    total_tokens = 0
    with TableWriter(config.out, "rollouts", manifest, overwrite=config.overwrite) as writer, \
            Progress(TextColumn("rollout"), BarColumn(), TextColumn("{task.completed}/{task.total} prompts"),
                     TimeRemainingColumn(), disable=not progress, transient=True) as bar:
        task = bar.add_task("rollout", total=len(rows))
        for b, start in enumerate(range(0, len(rows), config.batch_size)):
            batch = rows[start:start + config.batch_size]
            seed = config.seed + b
            groups = generate(loaded.model, loaded.processor, batch, settings, seed=seed)
            out = []
            for offset, (row, group) in enumerate(zip(batch, groups)):
                for j, s in enumerate(group):
                    reasons[s.finish_reason] = reasons.get(s.finish_reason, 0) + 1
                    total_tokens += len(s.token_ids)
                    out.append({**row, "group_index": start + offset, "sample_index": j, "completion": s.text,
                                "completion_ids": s.token_ids, "logprobs": s.logprobs,
                                "num_tokens": len(s.token_ids), "finish_reason": s.finish_reason,
                                "policy": config.model, "policy_hash": policy["hash"], "backend": "hf",
                                "temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k,
                                "max_new_tokens": config.max_new_tokens, "seed": seed})
            writer.write_rows(out)
            bar.advance(task, len(batch))
        n = writer.rows_written
    return Result(path=config.out, prompts=len(rows), rows=n, finish_reasons=reasons, mean_tokens=total_tokens / n)
