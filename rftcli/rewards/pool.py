"""Scoring chunks of rows in worker processes, results in input order, with a watchdog.

`score_chunk` scores one chunk (a few hundred rows) with `rftcli.rewards.combine.score_columns`
(which also turns a NaN or infinite value into the `on_error` value, counted as an error);
`score --workers 1` calls it in process, and `WorkerPool.imap` calls it in N worker processes
(fresh interpreters that load the rewards by spec, so functions never need pickling) and yields
the results in the order of the chunks. Every row's value depends only on that row, so the output is
the same for any number of workers - except a row near its time limit, which may finish in one run
and not in another.

The watchdog covers what the in-process alarm cannot: a reward stuck in C code, or a worker that dies
(a segfault, the out-of-memory killer). A worker reports after each call, and each call is limited
to `timeout_s`, so one that is silent for `timeout_s + grace_s` is stuck: it is killed (only ever
the workers this pool started) and restarted, and its chunk is scored again row by row, one row per
task; a row that fails again is scored reward by reward, and a (row, reward) that fails again gets
the `on_error` value, counted as a timeout (stuck) or an error (died).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

from rftcli.rewards.combine import FailureLog, Isolation, WeightedReward, load_rewards, score_columns, weighted_total

START_TIMEOUT_S = 120.0
"""Seconds a worker may take to start and load the rewards."""
GRACE_S = 10.0
"""Silence beyond the row time limit after which a worker counts as stuck."""
_TICK_EVERY_S = 0.2


@dataclass
class Chunk:
    """Rows to score: `offset` is the first row's number in the input."""

    offset: int
    completions: list
    columns: dict[str, list]

    def __len__(self) -> int:
        return len(self.completions)

    def row(self, i: int) -> Chunk:
        return Chunk(self.offset + i, self.completions[i:i + 1], {k: v[i:i + 1] for k, v in self.columns.items()})


@dataclass
class ChunkResult:
    per: dict[str, list[float | None]]
    total: list[float]
    failures: FailureLog = field(default_factory=FailureLog)


def score_chunk(rewards: Sequence[WeightedReward], chunk: Chunk, isolation: Isolation, tick=None) -> ChunkResult:
    """All rewards on one chunk; failures are counted in the result, not logged."""
    failures = FailureLog()
    per, total = score_columns(rewards, chunk.completions, chunk.columns, {}, isolation=isolation,
                               failures=failures, offset=chunk.offset, tick=tick)
    return ChunkResult(per, total, failures)


def _concat(parts: Sequence[ChunkResult]) -> ChunkResult:
    out = ChunkResult({name: [] for name in parts[0].per}, [])
    for part in parts:
        for name, values in part.per.items():
            out.per[name].extend(values)
        out.total.extend(part.total)
        out.failures.merge(part.failures)
    return out


def _worker_main(recv: Connection, send: Connection) -> None:
    """A worker's loop: load the rewards named in the first message, then score chunks until None."""
    path, specs, isolation = recv.recv()
    sys.path[:] = path  # the parent's, so `pkg.module:fn` specs import the same modules
    rewards = load_rewards(specs)
    send.send(("ready",))
    last = [time.monotonic()]

    def tick() -> None:
        now = time.monotonic()
        if now - last[0] >= _TICK_EVERY_S:
            last[0] = now
            send.send(("tick",))

    while True:
        try:
            message = recv.recv()
        except EOFError:  # the parent is gone
            return
        if message is None:
            return
        task_id, chunk, only = message
        last[0] = time.monotonic()
        chosen = rewards if only is None else [rewards[only]]
        send.send(("done", task_id, score_chunk(chosen, chunk, isolation, tick)))


def _worker_entry() -> None:  # pragma: no cover - runs in the worker process
    _worker_main(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))


_WORKER_CMD = "from rftcli.rewards.pool import _worker_entry; _worker_entry()"


@dataclass
class _Task:
    chunk_id: int
    chunk: Chunk
    row: int | None = None  # set once the chunk failed and is retried row by row
    reward: int | None = None  # set once the row failed and is retried reward by reward


class _Worker:
    """One worker: a plain `python -c` subprocess with two pipes of its own (not stdin/stdout, which a
    reward may print to). Not multiprocessing's spawn, which re-imports the caller's `__main__` - and
    so fails from stdin or reruns an unguarded script."""

    def __init__(self, specs: Sequence[str], isolation: Isolation):
        self._init = (list(sys.path), list(specs), isolation)
        self.task: _Task | None = None
        self.last_seen = 0.0
        self.proc: subprocess.Popen | None = None
        self.conn: Connection | None = None  # results and ticks from the worker
        self._to_worker: Connection | None = None

    def start(self) -> None:
        down_r, down_w = os.pipe()  # parent -> worker
        up_r, up_w = os.pipe()  # worker -> parent
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_CMD, str(down_r), str(up_w)],
                                         pass_fds=(down_r, up_w), stdin=subprocess.DEVNULL, env=env)
        finally:
            os.close(down_r)
            os.close(up_w)
        self._to_worker = Connection(down_w, readable=False)
        self.conn = Connection(up_r, writable=False)
        self._to_worker.send(self._init)
        self.task = None

    def ready(self) -> None:
        if not self.conn.poll(START_TIMEOUT_S):
            self.kill()
            raise RuntimeError(f"a score worker did not start within {START_TIMEOUT_S:g} s")
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            message = None
        if message != ("ready",):
            code = self.proc.poll() if self.proc is not None else None
            self.kill()
            raise RuntimeError(f"a score worker failed to start (exit code {code}); see its message above")
        self.last_seen = time.monotonic()

    def send(self, task: _Task) -> None:
        self.task = task
        self.last_seen = time.monotonic()
        self._to_worker.send((task.chunk_id, task.chunk, task.reward))

    def exit_code(self) -> int | None:
        try:
            return self.proc.wait(1)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        for conn in (self.conn, self._to_worker):
            if conn is not None:
                conn.close()
        self.proc, self.conn, self._to_worker = None, None, None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None and self._to_worker is not None:
            try:
                self._to_worker.send(None)
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


class WorkerPool:
    """N worker processes that score chunks; use as a context manager and iterate `imap(chunks)`."""

    def __init__(self, rewards: Sequence[WeightedReward], specs: Sequence[str], workers: int,
                 isolation: Isolation = Isolation(), grace_s: float = GRACE_S):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.rewards = list(rewards)
        self.isolation = isolation
        self.stall_s = isolation.timeout_s + grace_s if isolation.timeout_s > 0 else None
        self._workers = [_Worker(specs, isolation) for _ in range(workers)]
        self.restarts = 0
        self._queue: deque[_Task] = deque()
        self._done: dict[int, ChunkResult] = {}
        self._sizes: dict[int, int] = {}
        self._rows: dict[int, dict[int, ChunkResult]] = {}  # chunk id -> its rows' results, once split
        self._parts: dict[tuple[int, int], dict[int, ChunkResult]] = {}  # (chunk, row) -> per-reward results

    def __enter__(self) -> WorkerPool:
        try:
            for w in self._workers:
                w.start()
            for w in self._workers:
                w.ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            w.stop()

    def imap(self, chunks: Iterable[Chunk]) -> Iterator[ChunkResult]:
        """Score `chunks`, yielding one result per chunk in input order; reads at most two chunks
        per worker ahead."""
        source = iter(chunks)
        next_id = want = 0
        exhausted = False
        while True:
            while not exhausted and next_id - want < 2 * len(self._workers):
                chunk = next(source, None)
                if chunk is None:
                    exhausted = True
                    break
                self._queue.append(_Task(next_id, chunk))
                self._sizes[next_id] = len(chunk)
                next_id += 1
            for w in self._workers:
                if w.task is None and self._queue:
                    w.send(self._queue.popleft())
            while want in self._done:
                yield self._done.pop(want)
                del self._sizes[want]
                want += 1
            if exhausted and want == next_id:
                return
            self._collect()

    def _collect(self) -> None:
        """Wait for messages from busy workers and file finished tasks; stuck or dead workers are
        restarted and their task retried in smaller pieces, or failed."""
        busy = [w for w in self._workers if w.task is not None]
        if not busy:
            return
        now = time.monotonic()
        timeout = None if self.stall_s is None else max(0.0, min(w.last_seen for w in busy) + self.stall_s - now)
        ready = set(wait([w.conn for w in busy], timeout))
        for w in busy:
            if w.conn in ready:
                try:
                    message = w.conn.recv()
                except (EOFError, OSError):
                    self._fail(w, f"the worker process died (exit code {w.exit_code()})", timed_out=False)
                    continue
                w.last_seen = time.monotonic()
                if message[0] == "done":
                    task, w.task = w.task, None
                    self._finished(task, message[2])
            elif self.stall_s is not None and time.monotonic() - w.last_seen > self.stall_s:
                self._fail(w, f"the worker was silent for {self.stall_s:g} s and was killed", timed_out=True)

    def _finished(self, task: _Task, result: ChunkResult) -> None:
        if task.row is None:
            self._done[task.chunk_id] = result
            return
        if task.reward is not None:
            parts = self._parts[(task.chunk_id, task.row)]
            parts[task.reward] = result
            if len(parts) < len(self.rewards):
                return
            del self._parts[(task.chunk_id, task.row)]
            per: dict[str, list[float | None]] = {}
            failures = FailureLog()
            for i in range(len(self.rewards)):
                per.update(parts[i].per)
                failures.merge(parts[i].failures)
            result = ChunkResult(per, weighted_total(self.rewards, per, 1), failures)
        rows = self._rows[task.chunk_id]
        rows[task.row] = result
        if len(rows) == self._sizes[task.chunk_id]:
            del self._rows[task.chunk_id]
            self._done[task.chunk_id] = _concat([rows[i] for i in range(len(rows))])

    def _fail(self, w: _Worker, detail: str, timed_out: bool) -> None:
        task = w.task
        w.kill()
        w.start()
        w.ready()
        self.restarts += 1
        if task.row is None and len(task.chunk) > 1:  # which row? try each alone
            self._rows[task.chunk_id] = {}
            self._queue.extendleft(reversed([_Task(task.chunk_id, task.chunk.row(i), row=i)
                                             for i in range(len(task.chunk))]))
            return
        if task.row is None:  # a chunk of one row is that row
            self._rows[task.chunk_id] = {}
            task = _Task(task.chunk_id, task.chunk, row=0)
        if task.reward is None and len(self.rewards) > 1:  # which reward? try each alone
            self._parts[(task.chunk_id, task.row)] = {}
            self._queue.extendleft(reversed([_Task(task.chunk_id, task.chunk, row=task.row, reward=k)
                                             for k in range(len(self.rewards))]))
            return
        failed = self.rewards if task.reward is None else [self.rewards[task.reward]]
        failures = FailureLog()
        for r in failed:
            failures.record(r.name, task.chunk.offset, timed_out, detail)
        per = {r.name: [self.isolation.fill] for r in failed}
        self._finished(task, ChunkResult(per, weighted_total(failed, per, 1), failures))


def default_workers(rows: int, cpus: int | None = None) -> int:
    """Worker count for `--workers 0`: one per CPU core (at most 8) for more than 4096 rows, else 1
    (in process: starting workers costs about a second each, more than scoring a few thousand rows)."""
    import os

    cpus = cpus or os.cpu_count() or 1
    return min(cpus, 8) if rows > 4096 else 1

