"""score: a `rollouts` table in, a `scores` table out.

Applies reward functions (TRL's signature: `fn(completions, **columns) -> list[float | None]`) found
by name, `pkg.module:function` or `path/file.py:function`, and writes one `reward_<name>` column per
function plus `reward`, their weighted sum (an abstention, None, counts 0 in the sum). Re-scoring a
scores table replaces its reward columns; every other column is carried unchanged, rows in order.

Isolation (`rftcli.rewards.combine`): each reward call has a time limit (`timeout` seconds per row);
a row whose reward raises, runs out of time or returns NaN/inf gets `on_error`'s value (None or 0.0),
is counted and logged with its row number, and the run goes on. With `workers` > 1 chunks of rows are
scored in worker processes (`rftcli.rewards.pool`), which also survive a reward stuck in C code or a
crashed worker; the table is the same as with one process.

Output is resumable, as in `rollout` (`rftcli.shards`): scored chunks go into `<out>.parts/` as plain
Parquet shards holding only row numbers and reward values (never the input's columns, images and
all), with each shard's failures in its metadata, at most one shard every `SHARD_SECONDS`. A killed
run restarted with the same input (by content hash), rewards (name, weight, and the content of a
`file.py` reward), timeout and on_error skips the chunks already there; `workers` may change. The
input is then read twice more: its completion, group_index and num_tokens columns (no images) for the
summary, computed from the shards' values, and whole, to write it with the reward columns appended -
the manifest, summary included, goes into the file's metadata before its rows. The final table is
written atomically and the work folder removed; table and summary do not depend on whether or where a
run was killed.

The summary, also written into the output's manifest under `summary`, holds per-reward means, group
statistics (mean within-group std of the total, and the share of groups with zero variance - groups
that teach GRPO nothing), failure counts, and the reward-hacking signals of
`rftcli.rewards.diagnostics`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rftcli.atomic import check_output
from rftcli.manifest import content_hash, make_manifest
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

if TYPE_CHECKING:
    from rftcli.shards import ShardedOutput

log = logging.getLogger("rftcli.score")

# Columns too heavy or meaningless for reward functions.
_NOT_PASSED = {"images", "completion_ids", "logprobs"}
CHUNK_ROWS = 256
"""Rows per reward call (and per task sent to a worker)."""
SHARD_SECONDS = 2.0
"""Scored chunks are written as a shard at most this often: fast rewards do not make thousands of tiny
files, and a kill loses at most this much work (plus the chunk in progress)."""
_BATCH_ROWS = 4 * CHUNK_ROWS
"""Rows per batch when the input is read for the summary and for writing."""
_SUMMARY_COLUMNS = ["completion", "group_index", "num_tokens"]


@dataclass(frozen=True)
class Config:
    rollouts: Path
    """Input rollouts (or scores) Parquet file."""
    out: Path
    """Output scores Parquet file (work folder while running: <out>.parts/)."""
    rewards: tuple[str, ...] = ("accuracy=1", "format=0.2")
    """Reward functions with weights, NAME[=WEIGHT]; NAME is built-in, pkg.module:fn or file.py:fn."""
    workers: int = 0
    """Worker processes; 1 scores in this process; 0 picks one per CPU core for inputs over 4096 rows."""
    timeout: float = DEFAULT_TIMEOUT_S
    """Seconds one reward may spend on one row (and on one chunk before rows are retried alone); 0: no limit."""
    on_error: str = "abstain"
    """Value of a row whose reward raised, timed out or returned NaN/inf: abstain (null, counts 0 in the
    total) or zero."""
    overwrite: bool = False
    """Replace an existing output, and discard a work folder left by a run with other settings."""

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
    """Rows whose reward raised or returned NaN/inf, per reward."""
    timeouts: dict[str, int] = field(default_factory=dict)
    """Rows whose reward ran out of time (or whose worker was killed), per reward."""
    group_std: float = math.nan
    """Mean over groups of the standard deviation of the total reward within the group."""
    diagnostics: dict[str, float] = field(default_factory=dict)
    """Reward-hacking signals, see `rftcli.rewards.diagnostics`."""
    failure_messages: list[str] = field(default_factory=list)
    """The first few failures per reward, "row N: reward NAME: what happened"."""
    workers: int = 1
    resumed_rows: int = 0
    """Rows found scored in the work folder of an earlier, killed run."""
    seconds: float = 0.0


def _chunks(path: Path, done: set[tuple], offsets: deque) -> Iterator[Chunk]:
    """The input's chunks not in `done` (by first row) as reward arguments; each offset goes on `offsets`."""
    offset = 0
    for batch in iter_batches(path, ("rollouts", "scores"), batch_size=CHUNK_ROWS):
        if (offset,) not in done:
            names = [c for c in batch.column_names
                     if c not in _NOT_PASSED and c != "reward" and not c.startswith("reward_")]
            columns = {c: batch.column(c).to_pylist() for c in names}
            offsets.append(offset)
            yield Chunk(offset, columns["completion"], columns)
        offset += batch.num_rows


class _ShardBuffer:
    """Scored chunks waiting to be written as one shard: columns `row` (row number), `chunk` (its
    chunk's first row, the resume key), `reward_<name>` and `reward`; its failures go in the metadata."""

    def __init__(self, shards: ShardedOutput, names: list[str]):
        self.shards, self.names = shards, names
        self.last = time.monotonic()
        self._clear()

    def _clear(self) -> None:
        self.rows: list[int] = []
        self.chunks: list[int] = []
        self.per: dict[str, list[float | None]] = {name: [] for name in self.names}
        self.total: list[float] = []
        self.failures = FailureLog()

    def add(self, offset: int, result: ChunkResult) -> None:
        n = len(result.total)
        self.rows.extend(range(offset, offset + n))
        self.chunks.extend([offset] * n)
        for name in self.names:
            self.per[name].extend(result.per[name])
        self.total.extend(result.total)
        self.failures.merge(result.failures)
        if time.monotonic() - self.last >= SHARD_SECONDS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if not self.rows:
            return
        columns = {"row": pa.array(self.rows, pa.int64()), "chunk": pa.array(self.chunks, pa.int64())}
        columns.update({f"reward_{name}": pa.array(self.per[name], pa.float64()) for name in self.names})
        columns["reward"] = pa.array(self.total, pa.float64())
        failures = {"errors": self.failures.errors, "timeouts": self.failures.timeouts,
                    "messages": self.failures.messages}
        self.shards.write(pa.table(columns), {"stage": "score", "rows": [self.rows[0], self.rows[-1] + 1],
                                              "failures": failures})
        self._clear()
        self.last = time.monotonic()


def _resume_key(config: Config, rewards: list[WeightedReward], manifest: dict[str, Any]) -> dict[str, Any]:
    """What decides the reward values: the input by content, each reward (a file's by its content, a
    built-in by rftcli's version), the time limit and on_error. `workers` and `overwrite` do not change
    a value, so they may differ on resume."""
    described = []
    for (spec, weight), r in zip(parse_weighted(list(config.rewards)), rewards, strict=True):
        where = spec.rpartition(":")[0]
        code = content_hash(where) if where.endswith(".py") else spec
        described.append({"name": r.name, "weight": weight, "code": code})
    return {"stage": "score", "inputs": {k: v["hash"] for k, v in manifest["inputs"].items()},
            "settings": {"rewards": described, "timeout": config.timeout, "on_error": config.on_error},
            "packages": {"rftcli": manifest["packages"].get("rftcli")}}


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


def run(config: Config) -> Result:
    import pyarrow.parquet as pq

    from rftcli.shards import ShardedOutput

    start = time.perf_counter()
    src, out = Path(config.rollouts), Path(config.out)
    check_output(out, config.overwrite, inputs=[config.rollouts])
    rewards = load_rewards(config.rewards)
    names = [r.name for r in rewards]
    isolation = Isolation(config.timeout, config.on_error)
    inspect_file(src, ("rollouts", "scores"))
    total_rows = pq.ParquetFile(src).metadata.num_rows
    if total_rows == 0:
        raise ValueError(f"{src}: no rows to score")
    workers = config.workers or default_workers(total_rows)
    manifest = make_manifest("score", config, {"rollouts": src},
                             rewards=[{"name": r.name, "weight": r.weight} for r in rewards])

    with ShardedOutput(out, None, _resume_key(config, rewards, manifest), ("chunk",),
                       overwrite=config.overwrite) as shards:
        resumed = sum(pq.ParquetFile(part).metadata.num_rows for part in shards.parts())
        if resumed:
            log.info("%s: resuming: %d of %d rows already scored in %s", out, resumed, total_rows, shards.folder)
        if resumed < total_rows:
            _score(src, rewards, config, isolation, workers, shards)
        values = _read_values(shards, names, total_rows)
        failures = FailureLog()
        for shard in sorted(shards.manifests(), key=lambda m: m["rows"][0]):  # row order, as scored
            failures.merge(FailureLog(**shard["failures"]))

        summary = _summary(src, rewards, values, failures)
        manifest["summary"] = _finite_or_none({**summary, "failure_messages": failures.messages, "workers": workers})
        with TableWriter(out, "scores", manifest, reward_names=names, overwrite=config.overwrite) as writer:
            offset = 0
            for batch in iter_batches(src, ("rollouts", "scores"), batch_size=_BATCH_ROWS):
                keep = [c for c in batch.column_names if c != "reward" and not c.startswith("reward_")]
                batch = batch.select(keep)
                part = values.slice(offset, batch.num_rows)
                for name in [f"reward_{n}" for n in names] + ["reward"]:
                    batch = batch.append_column(name, part.column(name))
                writer.write_table(batch)
                offset += batch.num_rows
            rows = writer.rows_written
        shards.remove()
    return Result(path=out, rows=rows, groups=summary["groups"], mean=summary["mean"],
                  zero_variance_groups=summary["zero_variance_groups"], errors=failures.errors,
                  timeouts=failures.timeouts, group_std=summary["group_std"], diagnostics=summary["diagnostics"],
                  failure_messages=failures.messages, workers=workers, resumed_rows=resumed,
                  seconds=time.perf_counter() - start)


def _score(src: Path, rewards: list[WeightedReward], config: Config, isolation: Isolation, workers: int,
           shards: ShardedOutput) -> None:
    """Score the chunks not yet in `shards` and write them there."""
    offsets: deque = deque()
    chunks = _chunks(src, shards.done, offsets)
    buffer = _ShardBuffer(shards, [r.name for r in rewards])
    shown = FailureLog()  # logs each reward's first few failures of this process

    def consume(results: Iterable[ChunkResult]) -> None:
        for result in results:
            for message in shown.merge(result.failures):
                log.warning("%s: %s", src, message)
            buffer.add(offsets.popleft(), result)

    try:
        if workers > 1:
            with WorkerPool(rewards, list(config.rewards), workers, isolation) as pool:
                consume(pool.imap(chunks))
        else:
            consume(score_chunk(rewards, chunk, isolation) for chunk in chunks)
    finally:
        buffer.flush()  # the finished chunks survive an interrupt (Ctrl-C) too


def _read_values(shards: ShardedOutput, names: list[str], total_rows: int):
    """The shards' reward columns in row order, checked to cover every input row exactly once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = [f"reward_{n}" for n in names] + ["reward"]
    if total_rows == 0:
        return pa.table({c: pa.array([], pa.float64()) for c in columns})
    table = shards.read(sort_by=["row"])
    rows = table.column("row")
    low_high = pc.min_max(rows).as_py()
    if (table.num_rows != total_rows or pc.count_distinct(rows).as_py() != total_rows
            or (low_high["min"], low_high["max"]) != (0, total_rows - 1)):
        raise ValueError(f"{shards.folder}: the shards do not cover the input's {total_rows} rows once each "
                         "(written by another pyarrow?); remove the folder and score again")
    return table.select(columns).combine_chunks()


def _summary(src: Path, rewards: list[WeightedReward], values, failures: FailureLog) -> dict:
    """Means, group statistics and diagnostics from the reward values and the input's completion,
    group_index and num_tokens columns (read alone: no images). Sums are exact (`math.fsum`) so the
    numbers do not depend on how the values were split into shards."""
    import pyarrow.parquet as pq

    columns = {r.name: f"reward_{r.name}" for r in rewards} | {"reward": "reward"}  # mean's key -> column
    sums: dict[str, list[float]] = {name: [] for name in columns}  # one exact sum per input batch
    counts = dict.fromkeys(columns, 0)
    groups: dict[int, list[float]] = defaultdict(list)
    diagnostics = Diagnostics()
    offset = 0
    for batch in pq.ParquetFile(src).iter_batches(batch_size=_BATCH_ROWS, columns=_SUMMARY_COLUMNS):
        part = values.slice(offset, batch.num_rows)
        for name, column in columns.items():
            given = [v for v in part.column(column).to_pylist() if v is not None]
            sums[name].append(math.fsum(given))
            counts[name] += len(given)
        totals = part.column("reward").to_pylist()
        group_ids = batch.column("group_index").to_pylist()
        diagnostics.add(batch.column("completion").to_pylist(), group_ids, batch.column("num_tokens").to_pylist(),
                        totals)
        for g, t in zip(group_ids, totals, strict=True):
            groups[g].append(t)
        offset += batch.num_rows
    mean = {name: math.fsum(sums[name]) / counts[name] if counts[name] else math.nan for name in columns}
    stds = []
    for v in groups.values():
        m = sum(v) / len(v)
        stds.append(math.sqrt(sum((x - m) ** 2 for x in v) / len(v)))
    flat = sum(1 for v in groups.values() if max(v) - min(v) < 1e-12)
    return {"rows": offset, "groups": len(groups), "mean": mean,
            "group_std": sum(stds) / len(stds) if stds else math.nan,
            "zero_variance_groups": flat / max(len(groups), 1),
            "errors": dict(failures.errors), "timeouts": dict(failures.timeouts),
            "diagnostics": diagnostics.summary()}
