"""score: a `rollouts` table in, a `scores` table out.

Applies reward functions (TRL's signature: `fn(completions, **columns) -> list[float | None]`) found
by name, `pkg.module:function` or `path/file.py:function`, and writes one `reward_<name>` column per
function plus `reward`, their weighted sum (an abstention, None, counts 0 in the sum). The summary
reports per-group statistics: the share of groups whose rewards have zero variance teach GRPO nothing.

A reward function that raises on a batch is retried row by row; a row that still raises scores None
and is counted, so one bad completion never kills the run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rftcli.manifest import make_manifest
from rftcli.rewards import get_reward, parse_weighted, reward_name
from rftcli.schema import TableWriter, iter_batches

# Columns too heavy or meaningless for reward functions.
_NOT_PASSED = {"images", "completion_ids", "logprobs"}


@dataclass(frozen=True)
class Config:
    rollouts: Path
    """Input rollouts (or scores) Parquet file."""
    out: Path
    """Output scores Parquet file."""
    rewards: tuple[str, ...] = ("accuracy=1", "format=0.2")
    """Reward functions with weights, NAME[=WEIGHT]; NAME is built-in, pkg.module:fn or file.py:fn."""
    overwrite: bool = False
    """Replace an existing output."""

    def __post_init__(self):
        if not self.rewards:
            raise ValueError("give at least one --reward")
        parse_weighted(list(self.rewards))


@dataclass(frozen=True)
class Result:
    path: Path
    rows: int
    groups: int
    mean: dict[str, float]
    zero_variance_groups: float
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WeightedReward:
    name: str
    weight: float
    fn: Callable[..., list[float | None]]


def load_rewards(specs: Sequence[str]) -> list[WeightedReward]:
    out = [WeightedReward(reward_name(spec), weight, get_reward(spec)) for spec, weight in parse_weighted(list(specs))]
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise ValueError(f"reward names must be unique, got {', '.join(names)}")
    return out


def apply_reward(reward: WeightedReward, completions: list[str], columns: Mapping[str, list[Any]],
                 errors: dict[str, int]) -> list[float | None]:
    """Call one reward on a batch; on an exception retry row by row, scoring failing rows None."""
    n = len(completions)
    try:
        values = list(reward.fn(completions, **columns))
        if len(values) != n:
            raise ValueError(f"reward {reward.name} returned {len(values)} values for {n} completions")
        return [None if v is None else float(v) for v in values]
    except Exception:
        pass
    values = []
    for i in range(n):
        try:
            v = reward.fn([completions[i]], **{k: [col[i]] for k, col in columns.items()})[0]
            values.append(None if v is None else float(v))
        except Exception:
            errors[reward.name] = errors.get(reward.name, 0) + 1
            values.append(None)
    return values


def score_columns(rewards: Sequence[WeightedReward], completions: list[str], columns: Mapping[str, list[Any]],
                  errors: dict[str, int]) -> tuple[dict[str, list[float | None]], list[float]]:
    """Per-function reward columns and their weighted total for one batch."""
    per = {r.name: apply_reward(r, completions, columns, errors) for r in rewards}
    total = [sum(r.weight * (per[r.name][i] or 0.0) for r in rewards) for i in range(len(completions))]
    return per, total


def run(config: Config) -> Result:
    rewards = load_rewards(config.rewards)
    manifest = make_manifest("score", config, {"rollouts": config.rollouts},
                             rewards=[{"name": r.name, "weight": r.weight} for r in rewards])
    errors: dict[str, int] = {}
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    groups: dict[int, list[float]] = defaultdict(list)
    with TableWriter(config.out, "scores", manifest, reward_names=[r.name for r in rewards],
                     overwrite=config.overwrite) as writer:
        for batch in iter_batches(config.rollouts, ("rollouts", "scores"), batch_size=512):
            # Re-scoring a scores table replaces its reward columns.
            keep = [c for c in batch.column_names if c != "reward" and not c.startswith("reward_")]
            batch = batch.select(keep)
            columns = {c: batch.column(c).to_pylist() for c in keep if c not in _NOT_PASSED}
            per, total = score_columns(rewards, columns["completion"], columns, errors)
            for name, values in per.items():
                batch = batch.append_column(f"reward_{name}", _float_array(values))
                for v in values:
                    if v is not None:
                        sums[name] += v
                        counts[name] += 1
            batch = batch.append_column("reward", _float_array(total))
            for g, t in zip(columns["group_index"], total):
                groups[g].append(t)
            writer.write_table(batch)
        rows = writer.rows_written
    mean = {name: (sums[name] / counts[name] if counts[name] else math.nan) for name in (r.name for r in rewards)}
    mean["reward"] = sum(sum(v) for v in groups.values()) / max(rows, 1)
    flat = sum(1 for v in groups.values() if max(v) - min(v) < 1e-12)
    return Result(path=config.out, rows=rows, groups=len(groups), mean=mean,
                  zero_variance_groups=flat / max(len(groups), 1), errors=errors)


def _float_array(values: list[float | None]):
    import pyarrow as pa

    return pa.array(values, type=pa.float64())
