"""How failures become one-line messages.

`first_line` is the one line of any exception a message quotes. `write_failure` recognises failures of
where an output goes rather than of rftcli - a full disk, a quota, a file-size limit, a read-only or
forbidden place - however a library wrapped them, and names the output and what to do next, with its
exit code: 1 for a full disk (the command was right; rerun it once there is room, and it continues from
what was kept), 2 for a place that cannot be written (pick another).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _chain(err: BaseException) -> Iterator[BaseException]:
    """`err` and the exceptions it was raised from or while handling, as a traceback shows them."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def _errno_of(err: BaseException) -> int | None:
    """The OS error number behind `err`. Libraries that wrap an OS error in their own exception keep only
    its text: pyarrow "IOError: ... [errno 28] No space left on device", safetensors "I/O error: No space
    left on device (os error 28)". Input errors (ValueError) are taken as they are: their text may quote
    an OS error about an input file, and their own message says where."""
    import errno

    if isinstance(err, OSError) and err.errno:
        return err.errno
    if isinstance(err, (ValueError, ImportError)):
        return None
    text = str(err).lower()
    number = re.search(r"\[errno (\d+)\]|os error (\d+)", text)
    if number:
        return int(number.group(1) or number.group(2))
    for words, code in (("no space left on device", errno.ENOSPC), ("disk quota exceeded", errno.EDQUOT),
                        ("read-only file system", errno.EROFS)):
        if words in text:
            return code
    return None


def _torch_disk_full(err: BaseException, path: Path | None) -> bool:
    """torch.save (TRL's optimizer.pt, rng_state.pth) reports a failed write without its cause ("unexpected
    pos 576 vs 534", "file write failed"): it was a full disk if the file system it wrote to has no room
    left (the part it wrote stays in the checkpoint folder, so the disk is still full)."""
    import os

    text = str(err)
    if path is None or not isinstance(err, RuntimeError) or not (
            "PytorchStreamWriter" in text or "inline_container.cc" in text):
        return False
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        fs = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    return fs.f_bavail * fs.f_frsize < 1 << 20


def write_failure(err: BaseException, since: int) -> tuple[str, int] | None:
    """A failure of where the output goes rather than of rftcli, as (one-line message, exit code): a full
    disk (exit 1: the machine, not the input; rerun once there is room) or a place that cannot be written
    (exit 2: pick another). The path named is the output being written when the write failed, else the
    file the OS error names, else the stage's output."""
    import errno
    import os

    from rftcli.atomic import DISK_FULL_ERRNOS, OutputNotWritableError, checked_outputs, output_of

    if isinstance(err, OutputNotWritableError):
        return first_line(err), 2
    found = next(((code, e) for e in _chain(err) if (code := _errno_of(e)) in DISK_FULL_ERRNOS | {errno.EROFS}
                  or (e is err and code in (errno.EACCES, errno.EPERM))), None)
    stage_out = next(iter(checked_outputs()[since:]), None)
    tagged = next((p for e in _chain(err) if (p := output_of(e)) is not None), None)
    filename = getattr(found[1], "filename", None) if found else None
    path = tagged or (Path(os.fsdecode(filename)) if filename else None) or stage_out
    if found is None:
        if not _torch_disk_full(err, path):
            return None
        found = (errno.ENOSPC, err)
    code = found[0]
    if code == errno.EFBIG:
        reason = "file too large (for this file system, or past the file size limit `ulimit -f`)"
        return f"{path}: {reason}" if path else reason, 1
    if code in DISK_FULL_ERRNOS:
        reason = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
        return f"{path}: {reason}{_after_disk_full(stage_out)}" if path else reason, 1
    if code == errno.EROFS:
        return f"{path}: cannot write here (read-only file system)" if path else "read-only file system", 2
    if tagged or filename:  # EACCES, EPERM
        return f"{path}: {os.strerror(code).lower()}", 2
    return first_line(err), 2  # a library's message, which names the file it could not open


def _after_disk_full(out: Path | None) -> str:
    """What to do after a full disk stopped the stage making `out`, given what its work folder kept."""
    if out is not None:
        from rftcli.workfolders import checkpoints_folder, latest_checkpoint, parts_folder

        parts = parts_folder(out)
        if any(parts.glob("part-*.parquet")):
            return f"; free some space, then rerun the same command to continue from the finished parts in {parts}"
        checkpoint = latest_checkpoint(checkpoints_folder(out))
        if checkpoint is not None:
            return f"; free some space, then rerun with --resume to continue from {checkpoint}"
    return "; free some space or pick another --out, then rerun"
