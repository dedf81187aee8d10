"""Resumable table outputs: rows are written in shards as they finish, and merged into the final table.

A stage that produces rows slowly (rollout; eval and score can do the same) writes each finished piece
of work as a shard into a work folder beside its output, `<out>.parts/`:

    <out>.parts/run.json          what the run is: its kind and resume key (the settings and input
                                  hashes that determine its rows)
    <out>.parts/part-000000.parquet, part-000001.parquet, ...   finished rows, each a valid table of
                                  the output's kind, written under a temporary name and renamed

With `kind=None` the shards are plain Parquet tables (no schema validation, the manifest kept in the
same metadata key): for a stage whose shards are not its output's rows, such as `score`, which keeps
only row numbers and reward values there and writes the final table itself, then calls `remove()`.

A run restarted with the same resume key skips the keys already in shards; one with a different key
stops with an error naming the first setting that differs, unless `overwrite` is given, which discards
the old work folder. `finish()` merges the shards in a fixed row order and writes the final table
atomically, then removes the work folder, so the result does not depend on where a run was killed.
A lock file keeps two processes from writing the same work folder at once.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rftcli.atomic import atomic_output, check_output, remove_aside
from rftcli.schema import MANIFEST_KEY, read_table, write_table
from rftcli.workfolders import parts_folder as work_folder

RUN_FILE = "run.json"
LOCK_FILE = ".lock"


def _difference(old: Any, new: Any, where: str = "") -> str | None:
    """The first place two JSON values differ, as 'name: old -> new', or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _difference(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    if old != new:
        return f"{where or 'value'}: {json.dumps(old)} then, {json.dumps(new)} now"
    return None


class ShardedOutput:
    """The shards of one output table. Use as a context manager:

        with ShardedOutput(out, "rollouts", key={...}, key_columns=("group_index",)) as shards:
            todo = [p for p in prompts if (p.index,) not in shards.done]
            for batch in ...:
                shards.write(rows, manifest)
            shards.finish(manifest, sort_by=["group_index", "sample_index"])

    `key` is JSON: everything that decides the rows' content. `key_columns` identify a finished unit of
    work (a prompt); a unit's rows must all go into one shard. `kind` None: plain Parquet shards (see the
    module docstring).
    """

    def __init__(self, out: str | Path, kind: str | None, key: Mapping[str, Any], key_columns: Sequence[str], *,
                 reward_names: Iterable[str] = (), overwrite: bool = False):
        self.out = Path(out)
        self.folder = work_folder(self.out)
        self.kind = kind
        self.key = json.loads(json.dumps(key, sort_keys=True))  # as it reads back from run.json
        self.key_columns = list(key_columns)
        self.reward_names = list(reward_names)
        self.overwrite = overwrite
        self.done: set[tuple] = set()
        self.resumed = False
        self._lock_fd: int | None = None
        self._next = 0

    # ------------------------------------------------------------ opening

    def __enter__(self) -> ShardedOutput:
        check_output(self.out, self.overwrite)
        try:
            if self.folder.exists():
                self._lock()  # before deciding anything: another process may be writing here
                self._open_existing()
            if not self.folder.exists():
                self.folder.mkdir(parents=True)
                self._lock()
                tmp = self.folder / f".{RUN_FILE}.tmp"
                tmp.write_text(json.dumps({"kind": self.kind, "key": self.key}, indent=1, sort_keys=True) + "\n")
                os.replace(tmp, self.folder / RUN_FILE)
        except BaseException:
            self._unlock()
            raise
        return self

    def _open_existing(self) -> None:
        try:
            recorded = json.loads((self.folder / RUN_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            recorded = None
        if recorded is None and not self.parts():  # died before it wrote run.json: nothing to keep
            self._discard()
            return
        if recorded is None or recorded.get("kind") != self.kind:
            what = ("is not an rftcli work folder" if recorded is None
                    else f"holds {recorded.get('kind') or 'plain Parquet'} shards")
            if not self.overwrite:
                raise FileExistsError(f"{self.folder}: {what}; move it away or pass --overwrite to discard it")
            self._discard()
            return
        diff = _difference(recorded.get("key"), self.key)
        if diff:
            if not self.overwrite:
                raise ValueError(f"{self.folder}: holds a partial run with other settings ({diff}); rerun with "
                                 "the same settings to resume it, or pass --overwrite to discard it")
            self._discard()
            return
        for leftover in self.folder.glob(".part-*"):  # a shard that was being written when the run died
            leftover.unlink(missing_ok=True)
        for part in self.parts():
            self._record(pq.read_table(part, columns=self.key_columns))
            self._next = max(self._next, int(part.stem.split("-")[1]) + 1)
        self.resumed = bool(self.done)

    def _discard(self) -> None:
        shutil.rmtree(self.folder)
        self._unlock()

    def _lock(self) -> None:
        self._unlock()
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise FileExistsError(f"{self.folder}: another process is writing this output") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the lock
            self._lock_fd = None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and self._lock_fd is not None and self.folder.is_dir() and not self.parts():
            # Failed before any piece was finished (bad input met late, a full disk): nothing to resume.
            shutil.rmtree(self.folder, ignore_errors=True)
        self._unlock()
        return False

    # ------------------------------------------------------------ writing

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))

    def _record(self, table: pa.Table) -> None:
        columns = [table.column(c).to_pylist() for c in self.key_columns]
        self.done.update(zip(*columns, strict=True))

    def write(self, rows: list[dict[str, Any]] | pa.Table, manifest: Mapping[str, Any]) -> Path | None:
        """Write finished rows as the next shard (validated against the kind's schema); returns its path."""
        if isinstance(rows, pa.Table) or self.kind is None:
            table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
        else:
            table = pa.Table.from_pylist([{c: r[c] for c in self.key_columns} for r in rows])
        if table.num_rows == 0:
            return None
        path = self.folder / f"part-{self._next:06d}.parquet"
        if self.kind is None:
            _write_plain(path, table, manifest)
        else:
            write_table(path, self.kind, rows, manifest, reward_names=self.reward_names)
        self._next += 1
        self._record(table)
        return path

    def manifests(self) -> list[dict[str, Any]]:
        """The manifest each shard was written with, in shard order."""
        out = []
        for part in self.parts():
            meta = pq.read_schema(part).metadata or {}
            out.append(json.loads(meta.get(MANIFEST_KEY, b"{}")))
        return out

    def read(self, sort_by: Sequence[str]) -> pa.Table:
        """All shards as one table, sorted by `sort_by` (ascending)."""
        if self.kind is None:
            tables = [pq.read_table(p).replace_schema_metadata(None) for p in self.parts()]
        else:
            tables = [read_table(p, self.kind).table for p in self.parts()]
        if not tables:
            raise ValueError(f"{self.folder}: no rows were written")
        return pa.concat_tables(tables).sort_by([(c, "ascending") for c in sort_by])

    def finish(self, manifest: Mapping[str, Any], sort_by: Sequence[str]) -> Path:
        """Merge the shards into the final table (written atomically), then remove the work folder."""
        if self.kind is None:
            _write_plain(self.out, self.read(sort_by), manifest, overwrite=self.overwrite)
        else:
            write_table(self.out, self.kind, self.read(sort_by), manifest, reward_names=self.reward_names,
                        overwrite=self.overwrite)
        self.remove()
        return self.out

    def remove(self) -> None:
        """Remove the work folder: after `finish()`, or once the caller has written the final output
        itself (a table that is not the shards merged)."""
        remove_aside(self.folder, self.out)
        self._unlock()


def _write_plain(path: Path, table: pa.Table, manifest: Mapping[str, Any], overwrite: bool = False) -> None:
    """A Parquet table with `manifest` in its metadata, written atomically; no schema checks."""
    table = table.replace_schema_metadata({MANIFEST_KEY: json.dumps(manifest, sort_keys=True).encode()})
    with atomic_output(path, overwrite=overwrite) as tmp:
        pq.write_table(table, tmp, compression="zstd")
