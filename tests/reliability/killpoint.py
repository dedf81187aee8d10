"""Run `rftcli ARGS` in this process and SIGKILL it at a chosen point: the Nth call of a function.

    python tests/reliability/killpoint.py --at os:replace --nth 2 --match /.out.parquet.tmp- -- score ...

`--at MODULE:ATTR` names the function as the code under test looks it up (`os:replace`, `torch:save`,
`pyarrow.parquet:ParquetWriter.__init__`); calls whose arguments contain `--match` are counted (any
call without it; with `--dst`, only calls whose last argument ends with it); at the `--nth` counted call the process kills itself with SIGKILL - before the call,
or with `--after` once it returned (a file opened, a header written). Nothing is caught or cleaned up:
it is the same signal `kill -9` sends, delivered at a point a test can name instead of a moment it has
to guess. `--at sleep:SECONDS` kills after a wall-clock delay instead (a random moment, given a seed).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import time


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _texts(args: tuple, kwargs: dict) -> list[str]:
    out = []
    for value in (*args, *kwargs.values()):
        try:
            out.append(os.fspath(value) if isinstance(value, os.PathLike) else str(value))
        except Exception:  # an object whose str() fails is not a path
            continue
    return out


def install(target: str, nth: int, match: str | None, after: bool, dst: str | None = None) -> None:
    if target.startswith("sleep:"):
        delay = float(target.partition(":")[2])
        timer = threading.Timer(delay, _die)
        timer.daemon = True  # a run that ends first is not held open until the delay passes
        timer.start()
        return
    module, _, attr = target.partition(":")
    owner = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        texts = _texts(args, kwargs)
        if (match is None or any(match in t for t in texts)) and (dst is None or texts[-1:] and texts[-1].endswith(dst)):
            calls[0] += 1
            if calls[0] == nth and not after:
                _die()
            result = original(*args, **kwargs)
            if calls[0] == nth:
                _die()
            return result
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--at", required=True)
    parser.add_argument("--nth", type=int, default=1)
    parser.add_argument("--match")
    parser.add_argument("--dst", help="count only calls whose last argument ends with this")
    parser.add_argument("--after", action="store_true")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args()
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    install(ns.at, ns.nth, ns.match, ns.after, ns.dst)
    started = time.monotonic()
    from rftcli.cli import app

    sys.argv = ["rftcli", *args]
    try:
        app()
    finally:
        # Reached only when the run ended before the kill point: say so, the test decides what it means.
        print(f"killpoint: {ns.at} not reached in {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
