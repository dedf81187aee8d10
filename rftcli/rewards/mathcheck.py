"""Symbolic answer checking with math_verify, under a hard time limit.

math_verify parses LaTeX into sympy and compares; some inputs make sympy run for minutes or forever
(`10^{10^{10}}`, `(10^9)!`, deeply nested `\\frac{`). math_verify's own timeout uses `signal.alarm`,
which has whole-second resolution, raises ValueError outside the main thread, and is applied per
parse and per gold/target pair (so one call may wait several timeouts). So its timeouts are switched
off here and one deadline covers a whole comparison:

- in the main thread: a `rftcli.rewards.timelimit.time_limit` of `MATH_TIMEOUT_S` seconds (fractions
  allowed), which nests inside the per-row limit `score` sets; when another library has an alarm
  pending (ours would clobber it) the check runs in the helper process instead;
- otherwise: a long-lived helper process (running `_serve`) answers each query,
  and is killed and restarted when it overruns.

Before any of that, inputs longer than `MAX_MATH_CHARS` or nested deeper than `MAX_DEPTH` braces are
rejected outright; a timed-out or rejected comparison is simply "not equal". Simple formulas
(`rftcli.rewards.formula`: arithmetic, `\\frac`, `\\sqrt`, `\\pi`, letters) are compared numerically
first, in microseconds; math_verify sees only what that cannot decide. Results and parsed
expressions are cached, since GRPO scores a group of completions against the same answer.

Where math_verify says "not equal" and both sides are constants, their values are compared too, as
complex numbers to 1e-12 relative: a constant expression is its value, so `e^{i\\pi}` equals `-1`
(math_verify reads `i` as a variable and leaves `exp(i*pi)` unevaluated), just as `\\sqrt{8}` equals
`2\\sqrt{2}`. Here `i` is the imaginary unit when it is the only letter of an expression.

Examples:
    >>> math_equal("\\\\frac12", "0.5")
    True
    >>> math_equal("\\\\sqrt{2}/2", "\\\\frac{1}{\\\\sqrt{2}}")
    True
    >>> math_equal("e^{i\\\\pi}", "-1")
    True
    >>> math_equal("10^{10^{10^{10}}}", "1")   # gives up after MATH_TIMEOUT_S
    False
"""

from __future__ import annotations

import functools
import logging
import os
import select
import subprocess
import sys
import threading
from pathlib import Path

from rftcli.rewards.formula import formulas_equal
from rftcli.rewards.timelimit import available as _limits_available
from rftcli.rewards.timelimit import time_limit

MATH_TIMEOUT_S = 2.0
"""Seconds allowed for one symbolic comparison (parse of both sides plus verify)."""
MAX_MATH_CHARS = 1000
"""Longer expressions are not attempted."""
MAX_DEPTH = 30
"""Expressions with braces or parentheses nested deeper are not attempted."""
_WORKER_START_S = 120.0
_SERVE_CMD = "from rftcli.rewards.mathcheck import _serve; _serve()"


class _DropNoTimeoutWarning(logging.Filter):
    # math_verify warns once that timeouts are off; here they are off on purpose.
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropNoTimeoutWarning())


def too_complex(expr: str) -> bool:
    """Cheap pre-check: too long or too deeply nested to hand to sympy."""
    if len(expr) > MAX_MATH_CHARS:
        return True
    depth = 0
    for ch in expr:
        if ch in "{([":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif ch in "})]":
            depth -= 1
    return False


def _delimit(expr: str) -> str:
    # math_verify only finds LaTeX between math delimiters: a bare "\frac12" parses to nothing.
    return expr if ("$" in expr or "\\(" in expr or "\\[" in expr) else f"${expr}$"


@functools.lru_cache(maxsize=4096)
def _parse(expr: str) -> tuple:
    # A parse cut short by the deadline raises through the cache, so only finished parses are kept.
    from math_verify import parse

    return tuple(parse(_delimit(expr), parsing_timeout=None))


def verify_untimed(pred: str, gold: str) -> bool:
    """math_verify's verdict with its timeouts off; call only under a deadline."""
    from math_verify import verify

    gold_parsed, pred_parsed = _parse(gold), _parse(pred)
    if not (gold_parsed and pred_parsed):
        return False
    return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None)) or \
        _same_constant(gold_parsed, pred_parsed)


def _same_constant(gold_parsed: tuple, pred_parsed: tuple) -> bool:
    """Both sides parse to constants with the same (complex) value."""
    import cmath

    import sympy

    def constant(e):
        if not isinstance(e, sympy.Expr):
            return None
        free = e.free_symbols
        if len(free) == 1 and next(iter(free)).name == "i":  # math_verify's "i" carries assumptions: by name
            return e.subs(next(iter(free)), sympy.I)
        return None if free else e

    for g in (c for c in map(constant, gold_parsed) if c is not None):
        for p in (c for c in map(constant, pred_parsed) if c is not None):
            try:
                a, b = complex(sympy.N(g, 20)), complex(sympy.N(p, 20))
            except (TypeError, ValueError, ArithmeticError):
                continue
            if cmath.isfinite(a) and cmath.isfinite(b) and cmath.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15):
                return True
    return False


def math_equal(pred: str, gold: str, timeout_s: float | None = None) -> bool:
    """Whether `pred` and `gold` are the same mathematical object, within `timeout_s` (default
    `MATH_TIMEOUT_S`, read at call time so it can be changed) seconds."""
    if not pred or not gold or too_complex(pred) or too_complex(gold):
        return False
    quick = formulas_equal(pred, gold)
    if quick is not None:
        return quick
    return _math_equal_cached(pred, gold, MATH_TIMEOUT_S if timeout_s is None else timeout_s)


@functools.lru_cache(maxsize=4096)
def _math_equal_cached(pred: str, gold: str, timeout_s: float) -> bool:
    # A comparison that ran out of time is cached as False too, so a group repeating an adversarial
    # answer pays the limit once. One cut short by an outer limit (the row's) raises through here.
    if _limits_available():
        _warm_up()
        verdict = False
        with time_limit(timeout_s) as limit:
            verdict = verify_untimed(pred, gold)
        return verdict and not limit.expired
    return _WORKER.ask(pred, gold, timeout_s)


@functools.cache
def _warm_up() -> None:
    """Import math_verify and load its grammar once, outside any deadline: starting up is not comparing
    (the helper process does the same before it says it is ready)."""
    _parse("1")


class _Worker:
    """A helper process that can be killed when sympy will not return; one query at a time."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None

    def ask(self, pred: str, gold: str, timeout_s: float) -> bool:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            query = (repr((pred, gold)) + "\n").encode()
            try:
                self._proc.stdin.write(query)
                self._proc.stdin.flush()
                reply = self._read_byte(timeout_s)
            except OSError:
                reply = None
            if reply is None:
                self._stop()
            return reply == b"1"

    def _read_byte(self, timeout_s: float) -> bytes | None:
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout_s)
        return (os.read(self._proc.stdout.fileno(), 1) or None) if ready else None

    def _start(self) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
        self._proc = subprocess.Popen([sys.executable, "-c", _SERVE_CMD], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, bufsize=0, env=env)
        if self._read_byte(_WORKER_START_S) != b"R":
            self._stop()
            raise RuntimeError("the math_verify helper process did not start")

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


_WORKER = _Worker()


def _serve() -> None:
    """Helper process loop: one `repr((pred, gold))` line in, one byte (b"1" or b"0") out."""
    import ast

    import math_verify  # noqa: F401  (import before saying ready, so startup is not billed to a query)

    out = sys.stdout.buffer
    out.write(b"R")
    out.flush()
    for line in sys.stdin.buffer:
        try:
            pred, gold = ast.literal_eval(line.decode())
            ok = verify_untimed(pred, gold)
        except Exception:
            ok = False
        out.write(b"1" if ok else b"0")
        out.flush()
