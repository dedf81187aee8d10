"""score: a `rollouts` table in, a `scores` table out.

Applies reward functions (TRL's signature: `fn(completions, **columns) -> list[float | None]`) found
by name, `pkg.module:function` or `path/file.py:function`, and writes one `reward_<name>` column per
function plus `reward`, their weighted sum (an abstention, None, counts 0 in the sum). Re-scoring a
scores table replaces its reward columns; every other column is carried unchanged, rows in order.

Isolation (`rftcli.rewards.combine`): each reward call has a time limit (`timeout` seconds per row);
a row whose reward raises or runs out of time gets `on_error`'s value (None or 0.0), is counted and
logged with its row number, and the run goes on. With `workers` > 1 chunks of rows are scored in
worker processes (`rftcli.rewards.pool`), which also survive a reward stuck in C code or a crashed
worker; the table is the same as with one process.

The summary, also written into the output's manifest under `summary`, holds per-reward means, group
statistics (mean within-group std of the total, and the share of groups with zero variance - groups
that teach GRPO nothing), failure counts, and the reward-hacking signals of
`rftcli.rewards.diagnostics`. The input is read twice - once to score, once to write - because the
manifest, summary included, goes into the file's metadata before its rows.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rftcli.atomic import check_output
from rftcli.manifest import make_manifest
from rftcli.rewards import parse_weighted
from rftcli.rewards.combine import (  # noqa: F401  (re-exported: eval and train-grpo import them from here)
    DEFAULT_TIMEOUT_S,
    ON_ERROR,
    FailureLog,
    Isolation,
    WeightedReward,
    apply_reward,
    load_rewards,
    score_columns,
)
from rftcli.rewards.diagnostics import Diagnostics
from rftcli.rewards.pool import Chunk, ChunkResult, WorkerPool, default_workers, score_chunk
from rftcli.schema import TableWriter, inspect_file, iter_batches

log = logging.getLogger("rftcli.score")

# Columns too heavy or meaningless for reward functions.
_NOT_PASSED = {"images", "completion_ids", "logprobs"}
CHUNK_ROWS = 256
"""Rows per reward call (and per task sent to a worker)."""


@dataclass(frozen=True)
class Config:
    rollouts: Path
    """Input rollouts (or scores) Parquet file."""
    out: Path
    """Output scores Parquet file."""
    rewards: tuple[str, ...] = ("accuracy=1", "format=0.2")
    """Reward functions with weights, NAME[=WEIGHT]; NAME is built-in, pkg.module:fn or file.py:fn."""
    workers: int = 0
    """Worker processes; 1 scores in this process; 0 picks one per CPU core for inputs over 4096 rows."""
    timeout: float = DEFAULT_TIMEOUT_S
    """Seconds one reward may spend on one row (and on one chunk before rows are retried alone); 0: no limit."""
    on_error: str = "abstain"
    """Value of a row whose reward raised or timed out: abstain (null, counts 0 in the total) or zero."""
    overwrite: bool = False
    """Replace an existing output."""

    def __post_init__(self):
        if not self.rewards:
            raise ValueError("give at least one --reward")
        parse_weighted(list(self.rewards))
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        Isolation(self.timeout, self.on_error)  # checks both


@dataclass(frozen=True)
class Result:
    path: Path
    rows: int
    groups: int
    mean: dict[str, float]
    zero_variance_groups: float
    errors: dict[str, int] = field(default_factory=dict)
    """Rows whose reward raised, per reward."""
    timeouts: dict[str, int] = field(default_factory=dict)
    """Rows whose reward ran out of time (or whose worker was killed), per reward."""
    group_std: float = math.nan
    """Mean over groups of the standard deviation of the total reward within the group."""
    diagnostics: dict[str, float] = field(default_factory=dict)
    """Reward-hacking signals, see `rftcli.rewards.diagnostics`."""
    failure_messages: list[str] = field(default_factory=list)
    """The first few failures per reward, "row N: reward NAME: what happened"."""
    workers: int = 1
    seconds: float = 0.0


def _chunks(path: Path, side: deque) -> Iterator[Chunk]:
    """The input as chunks of reward arguments; (texts, groups, lengths) of each go on `side`."""
    offset = 0
    for batch in iter_batches(path, ("rollouts", "scores"), batch_size=CHUNK_ROWS):
        names = [c for c in batch.column_names
                 if c not in _NOT_PASSED and c != "reward" and not c.startswith("reward_")]
        columns = {c: batch.column(c).to_pylist() for c in names}
        side.append((columns["completion"], columns["group_index"], columns["num_tokens"]))
        yield Chunk(offset, columns["completion"], columns)
        offset += batch.num_rows


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


def run(config: Config) -> Result:
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    src, out = Path(config.rollouts), Path(config.out)
    check_output(out, config.overwrite)
    rewards = load_rewards(config.rewards)
    isolation = Isolation(config.timeout, config.on_error)
    inspect_file(src, ("rollouts", "scores"))
    total_rows = pq.ParquetFile(src).metadata.num_rows
    workers = config.workers or default_workers(total_rows)

    # Pass 1: score, keeping only the reward values.
    values: dict[str, list[float | None]] = {r.name: [] for r in rewards}
    totals: list[float] = []
    failures = FailureLog()
    diagnostics = Diagnostics()
    groups: dict[int, list[float]] = defaultdict(list)
    side: deque = deque()
    chunks = _chunks(src, side)

    def consume(results: Iterator[ChunkResult]) -> None:
        for result in results:
            texts, group_ids, lengths = side.popleft()
            for name, column in result.per.items():
                values[name].extend(column)
            totals.extend(result.total)
            for message in failures.merge(result.failures):
                log.warning("%s: %s", src, message)
            diagnostics.add(texts, group_ids, lengths, result.total)
            for g, t in zip(group_ids, result.total, strict=True):
                groups[g].append(t)

    if workers > 1:
        with WorkerPool(rewards, list(config.rewards), workers, isolation) as pool:
            consume(pool.imap(chunks))
    else:
        consume(score_chunk(rewards, chunk, isolation) for chunk in chunks)

    summary = _summary(rewards, values, totals, groups, failures, diagnostics)
    manifest = make_manifest("score", config, {"rollouts": src},
                             rewards=[{"name": r.name, "weight": r.weight} for r in rewards],
                             summary=_finite_or_none({**summary, "failure_messages": failures.messages,
                                                      "workers": workers}))

    # Pass 2: the input again, reward columns appended.
    with TableWriter(out, "scores", manifest, reward_names=[r.name for r in rewards],
                     overwrite=config.overwrite) as writer:
        offset = 0
        for batch in iter_batches(src, ("rollouts", "scores"), batch_size=4 * CHUNK_ROWS):
            keep = [c for c in batch.column_names if c != "reward" and not c.startswith("reward_")]
            batch = batch.select(keep)
            end = offset + batch.num_rows
            for r in rewards:
                batch = batch.append_column(f"reward_{r.name}", pa.array(values[r.name][offset:end], pa.float64()))
            batch = batch.append_column("reward", pa.array(totals[offset:end], pa.float64()))
            writer.write_table(batch)
            offset = end
        rows = writer.rows_written
    return Result(path=out, rows=rows, groups=summary["groups"], mean=summary["mean"],
                  zero_variance_groups=summary["zero_variance_groups"], errors=failures.errors,
                  timeouts=failures.timeouts, group_std=summary["group_std"], diagnostics=summary["diagnostics"],
                  failure_messages=failures.messages, workers=workers, seconds=time.perf_counter() - start)


def _summary(rewards, values, totals, groups, failures: FailureLog, diagnostics: Diagnostics) -> dict:
    mean = {}
    for r in rewards:
        given = [v for v in values[r.name] if v is not None]
        mean[r.name] = sum(given) / len(given) if given else math.nan
    mean["reward"] = sum(totals) / len(totals) if totals else math.nan
    stds = []
    for v in groups.values():
        m = sum(v) / len(v)
        stds.append(math.sqrt(sum((x - m) ** 2 for x in v) / len(v)))
    flat = sum(1 for v in groups.values() if max(v) - min(v) < 1e-12)
    return {"rows": len(totals), "groups": len(groups), "mean": mean,
            "group_std": sum(stds) / len(stds) if stds else math.nan,
            "zero_variance_groups": flat / max(len(groups), 1),
            "errors": dict(failures.errors), "timeouts": dict(failures.timeouts),
            "diagnostics": diagnostics.summary()}
