"""Time limits that nest, on one SIGALRM interval timer.

`score` limits each reward call (a batch, then each row), and inside it `accuracy` limits each
symbolic comparison; both need the process's single `ITIMER_REAL`. `time_limit` keeps a stack of
deadlines, arms the timer for the nearest one, and when it fires raises `TimeLimitExpired` for the
outermost limit that has run out, so an inner limit never swallows its caller's expiry. A limit
that expires is suppressed at its own `with` and sets `.expired`:

    >>> with time_limit(0.05) as limit:
    ...     while True:
    ...         pass
    >>> limit.expired
    True

Limits only work in the main thread and only when no other code has an alarm pending (`available()`);
elsewhere `time_limit` runs the block unlimited and says so in `.enforced`. The alarm interrupts
Python code and the `re` engine; C code that never returns to the interpreter (a long
big-integer power, a blocked signal) is not interrupted - `score --workers N` kills such a worker
instead (see `rftcli.rewards.pool`).
"""

from __future__ import annotations

import signal
import threading
import time

_SLACK_S = 1e-4
_stack: list[time_limit] = []  # outermost first
_saved_handler = None


class TimeLimitExpired(BaseException):
    """Raised in the limited block; a BaseException so library `except Exception` clauses pass it on."""

    def __init__(self, owner: time_limit):
        super().__init__(f"time limit of {owner.seconds:g} s exceeded")
        self.owner = owner


def available() -> bool:
    """Whether a limit can be enforced here: main thread, setitimer, and no foreign alarm pending."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        return False
    return bool(_stack) or signal.getitimer(signal.ITIMER_REAL)[0] == 0.0


def _on_alarm(signum, frame):
    now = time.monotonic()
    for limit in _stack:
        if limit.end <= now + _SLACK_S:
            raise TimeLimitExpired(limit)
    _arm()  # woke early (timer granularity): wait for the nearest deadline again


def _arm() -> None:
    if _stack:
        remaining = min(limit.end for limit in _stack) - time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, max(remaining, _SLACK_S))
    else:
        signal.setitimer(signal.ITIMER_REAL, 0)


class time_limit:  # noqa: N801  (used like a function: `with time_limit(2.0) as limit:`)
    """Run a block for at most `seconds` (None or <= 0: no limit); afterwards `.expired` says whether
    it was cut short. Nests with other `time_limit`s."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.end = 0.0
        self.expired = False
        self.enforced = False

    def __enter__(self) -> time_limit:
        global _saved_handler
        if self.seconds is None or self.seconds <= 0 or not available():
            return self
        if _stack and signal.getitimer(signal.ITIMER_REAL)[0] == 0.0:
            # Entries left by a `with` whose exit was pre-empted by the alarm itself: nothing is armed
            # for them any more, so they are stale.
            _stack.clear()
        if not _stack:
            _saved_handler = signal.signal(signal.SIGALRM, _on_alarm)
        self.end = time.monotonic() + self.seconds
        self.enforced = True
        _stack.append(self)
        _arm()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self.enforced:
            return False
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)  # first, so the alarm cannot fire mid-update
        except TimeLimitExpired as late:  # fired after the block ended but before the timer was off
            exc = late
        if self in _stack:
            del _stack[_stack.index(self):]  # also any inner limit whose exit was pre-empted
        if _stack:
            _arm()
        else:
            signal.signal(signal.SIGALRM, _saved_handler if _saved_handler is not None else signal.SIG_DFL)
        if isinstance(exc, TimeLimitExpired) and exc.owner not in _stack:  # ours, or an inner one's
            self.expired = True
            return True
        if exc is not None and exc_type is None:  # a late expiry of an outer limit
            raise exc
        return False
