"""Atomic outputs: every artifact is written under a temporary name beside its final path and renamed
into place only when complete, so a killed stage never leaves a half-written file where a finished one
is expected. An existing output is replaced only when the caller says `overwrite`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputExistsError(FileExistsError):
    """The output path exists and `--overwrite` was not given."""

    def __init__(self, path: Path):
        super().__init__(f"{path}: output already exists; pass --overwrite to replace it")
        self.path = path


def check_output(path: Path, overwrite: bool) -> None:
    """Fail before any work is done if `path` exists and may not be replaced."""
    if path.exists() and not overwrite:
        raise OutputExistsError(path)


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
    the caller creates the file. The parent folder of `path` is created if missing.
    """
    path = Path(path)
    check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"{path}: the stage finished without writing its output")
        check_output(path, overwrite)  # something else may have appeared meanwhile
        if path.exists():
            # Move the old output aside first: a rename over a non-empty folder is not allowed.
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
