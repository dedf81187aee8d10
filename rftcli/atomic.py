"""Atomic outputs: every artifact is written under a temporary name beside its final path and renamed
into place only when complete, so a killed stage never leaves a half-written file where a finished one
is expected. An existing output is replaced only when the caller says `overwrite`.

`check_output` refuses an output that is one of the command's inputs, links followed (`out.parquet` a
symlink to the input, the input given under another path), or that holds one (an input inside an output
folder or its `.work`/`.parts` folders), with or without `overwrite`: replacing it would destroy the input
the stage reads while it runs.

Before any work, `check_output` also proves the output's folder can be written (a file is created there
and removed), so a read-only or otherwise unwritable place fails in a second, not after hours of
training. A write that fails inside `atomic_output` is tagged with the output it was making
(`output_of`), so an error message can name it even when the library that raised (pyarrow,
safetensors) gives no file name.

A writer holds an advisory lock (flock) on its temporary file or folder while it writes. A process
killed mid-write cannot delete its temporary, but its lock dies with it: the next run's `check_output`
for the same output removes the siblings nobody holds (`.NAME.tmp-*`, `.NAME.old-*`), so kills do not pile up
copies of a checkpoint on disk, and a temporary another live process is writing is never touched.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

# Errors of a full disk: no blocks left, the user's quota spent, a file past the file system's size limit.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class OutputExistsError(FileExistsError):
    """The output path exists and `--overwrite` was not given."""

    def __init__(self, path: Path):
        super().__init__(f"{path}: output already exists; pass --overwrite to replace it")
        self.path = path


class OutputIsInputError(ValueError):
    """The output would replace (or sits around) one of the same command's inputs."""


class OutputNotWritableError(PermissionError):
    """The output's folder cannot be written (read-only file system, no permission, not a folder)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: cannot write here ({reason})")
        self.path = path


# The outputs this process was asked to write, oldest first: a failure deep inside a library that names no
# file (a full disk while TRL saves a checkpoint into `<out>.work/`) is reported against the output it hit.
_CHECKED: list[Path] = []


def checked_outputs() -> list[Path]:
    """Every path `check_output` has passed in this process, oldest first."""
    return list(_CHECKED)


def check_output(path: str | Path, overwrite: bool, inputs: Iterable[str | Path | None] = ()) -> None:
    """Fail before any work is done if `path` is or holds one of `inputs` (see `refuse_input`), exists and may
    not be replaced, or if its folder (the nearest existing one: missing folders are created later) cannot be
    written."""
    path = Path(path)
    refuse_input(path, inputs)
    if not overwrite and path.exists():
        remove_finished_leftovers(path)
    _refuse_existing(path, overwrite)
    _probe_writable(path)
    remove_stale_temporaries(path)
    if not _CHECKED or _CHECKED[-1] != path:
        _CHECKED.append(path)


def refuse_input(path: Path, inputs: Iterable[str | Path | None]) -> None:
    """Raise OutputIsInputError if output `path`, links followed, is one of `inputs` or would hold one (an
    input inside the output, or inside its work folders). Inputs that are no local path (None, a hub id,
    builtin:NAME) are skipped."""
    out = Path(os.path.realpath(path))
    around = [out, *(out.with_name(out.name + suffix) for suffix in WORK_SUFFIXES)]
    for given in inputs:
        if given is None or not os.path.lexists(given):
            continue
        real = Path(os.path.realpath(given))
        same = real == out or (path.exists() and _same_file(path, real))
        if same:
            raise OutputIsInputError(f"{path}: the output is the input {given}; writing it would destroy what "
                                     "this command reads, with or without --overwrite; pick another --out")
        holder = next((folder for folder in around if real.is_relative_to(folder)), None)
        if holder is not None:
            raise OutputIsInputError(f"{path}: the input {given} lies inside {holder}, which this command "
                                     "replaces or removes; pick another --out")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def output_of(err: BaseException) -> Path | None:
    """The output `atomic_output` was making when `err` was raised inside it (the outermost), or None."""
    return getattr(err, "_rftcli_output", None)


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise OutputExistsError(path)


def _probe_writable(path: Path) -> None:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputNotWritableError(path, f"{folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name[:64]}.probe-", dir=folder)
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS:  # not even an empty file fits: report it as the full disk it is
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise OutputNotWritableError(path, err.strerror or str(err)) from None
    os.close(fd)
    os.unlink(probe)


def _lock(path: Path) -> int | None:
    """An exclusive, non-blocking flock on `path` (file or folder): its descriptor, or None when another
    process holds it or the path is gone."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locks, so no cleanup either
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the `.NAME.tmp-*` and `.NAME.old-*` siblings of `path` whose writer is gone; return them."""
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for sibling in path.parent.iterdir():
        if not sibling.name.startswith((f".{path.name}.tmp-", f".{path.name}.old-")):
            continue
        fd = _lock(sibling)
        if fd is None:
            continue
        try:
            _remove(sibling)
            removed.append(sibling)
        finally:
            os.close(fd)
    return removed


WORK_SUFFIXES = (".work", ".parts")
"""Work folders beside an output: training checkpoints (`<out>.work`), finished shards (`<out>.parts`)."""


def remove_aside(folder: Path, output: Path) -> None:
    """Remove `output`'s work folder `folder` so that a kill midway leaves nothing under its name: it is
    renamed to a stale temporary of `output` first (which the next run for `output` removes), then deleted.
    Deleted in place, a half-removed checkpoint could keep the file that marks it complete."""
    if not folder.exists():
        return
    aside = output.with_name(f".{output.name}.old-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(folder, aside)
    except OSError:
        aside = folder
    _remove(aside)


def remove_finished_leftovers(path: Path) -> None:
    """Remove the work folders of the run that wrote `path`: a kill between renaming the output into place
    and removing them leaves them behind. Only folders with nothing newer than the output go: a run
    writing there now (say with --overwrite) is left alone."""
    try:
        finished = path.stat().st_mtime
    except OSError:
        return
    for suffix in WORK_SUFFIXES:
        folder = path.with_name(path.name + suffix)
        if folder.is_dir() and not folder.is_symlink() and _newest_mtime(folder) <= finished:
            remove_aside(folder, path)


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            try:
                newest = max(newest, os.stat(os.path.join(root, name), follow_symlinks=False).st_mtime)
            except OSError:
                continue
    return newest


def _temp_sibling(path: Path) -> Path:
    # Same directory as the target so the final rename never crosses a filesystem.
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: str | Path, overwrite: bool = False, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; on success move it to `path`, on error delete it.

    With `directory=True` the temporary path is created as an empty folder (a checkpoint); otherwise
    as an empty file for the caller to overwrite in place. The parent folder of `path` is created if
    missing. The temporary stays locked until it is renamed, so no other run takes it for stale.
    """
    path = Path(path)
    _refuse_existing(path, overwrite)  # writability and stale temporaries: checked once, by check_output
    tmp = _temp_sibling(path)
    lock: int | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp.mkdir()
        else:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        lock = _lock(tmp)
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"{path}: the stage finished without writing its output")
        _refuse_existing(path, overwrite)  # something else may have appeared meanwhile
        if path.exists():
            # Move the old output aside first: a rename over a non-empty folder is not allowed.
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException as err:
        _remove(tmp)
        err._rftcli_output = path  # set again by an enclosing atomic_output: the outermost output wins
        raise
    finally:
        if lock is not None:
            os.close(lock)
