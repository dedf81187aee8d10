"""Applying weighted reward functions to rows, so that no row can stop or stall a run.

Each reward is first called on a whole batch under one time limit of `Isolation.timeout_s` seconds
(a healthy reward scores a batch well within the time one row may take; `accuracy` limits each
symbolic comparison to 2 s inside that). If the batch call raises, returns the wrong number of
values, or runs out of time, the reward is called again row by row, each row under its own limit
of `timeout_s`. A row that still raises or runs out of time gets the `on_error` value - None
(abstain: no evidence either way, and the weighted total counts it 0) or 0.0 - and is counted per
reward and logged with its row number. A value that is NaN or infinite counts as an error of its row
("returned nan") without a retry: it would poison the weighted total and every group statistic.
KeyboardInterrupt is passed on; a reward that calls `sys.exit()` fails its row like one that raises (its
SystemExit ended `score` with that exit code and no message).

Time limits use the alarm of `rftcli.rewards.timelimit`, so they hold in the main thread; elsewhere
rows run unlimited (math checks still have their own helper-process limit). Code stuck in C that
never returns to Python is cut off only by `rftcli.rewards.pool`, which kills the worker process.

    >>> rewards = load_rewards(["accuracy=1", "format=0.2"])
    >>> per, total = score_columns(rewards, ["<think>two plus two</think><answer>4</answer>"], {"answer": ["4"]}, errors={})
    >>> per, total
    ({'accuracy': [1.0], 'format': [1.0]}, [1.2])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rftcli.rewards import get_reward, parse_weighted, reward_name
from rftcli.rewards.timelimit import TimeLimitExpired, time_limit

ON_ERROR = ("abstain", "zero")
DEFAULT_TIMEOUT_S = 10.0
MAX_MESSAGES = 5
"""Failure messages kept (and logged) per reward; the rest are only counted."""

log = logging.getLogger("rftcli.rewards")


@dataclass(frozen=True)
class Isolation:
    """How failing rows are handled."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    """Seconds one reward may spend on one row, and on one batch before it is retried row by row; 0: no limit."""
    on_error: str = "abstain"
    """Value of a row whose reward raised or ran out of time: abstain (None) or zero (0.0)."""

    def __post_init__(self):
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {self.on_error!r}")
        if not self.timeout_s >= 0:
            raise ValueError(f"timeout must be >= 0 seconds, got {self.timeout_s}")

    @property
    def fill(self) -> float | None:
        return None if self.on_error == "abstain" else 0.0


@dataclass
class FailureLog:
    """Rows whose reward raised or returned NaN/inf (`errors`) or ran out of time (`timeouts`), per
    reward, and the first `MAX_MESSAGES` messages per reward as "row N: reward NAME: what happened"."""

    errors: dict[str, int] = field(default_factory=dict)
    timeouts: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    _shown: dict[str, int] = field(default_factory=dict)

    def record(self, name: str, row: int, timed_out: bool, detail: str) -> None:
        counts = self.timeouts if timed_out else self.errors
        counts[name] = counts.get(name, 0) + 1
        if self._shown.get(name, 0) < MAX_MESSAGES:
            self._shown[name] = self._shown.get(name, 0) + 1
            self.messages.append(f"row {row}: reward {name}: {detail}")

    def merge(self, other: FailureLog) -> list[str]:
        """Add `other`'s counts and messages (still at most MAX_MESSAGES per reward); returns the
        messages that were kept."""
        for name, n in other.errors.items():
            self.errors[name] = self.errors.get(name, 0) + n
        for name, n in other.timeouts.items():
            self.timeouts[name] = self.timeouts.get(name, 0) + n
        kept = []
        for message in other.messages:
            name = message.split(": reward ", 1)[1].split(":", 1)[0]
            if self._shown.get(name, 0) < MAX_MESSAGES:
                self._shown[name] = self._shown.get(name, 0) + 1
                self.messages.append(message)
                kept.append(message)
        return kept


@dataclass(frozen=True)
class WeightedReward:
    name: str
    weight: float
    fn: Callable[..., list[float | None]]

    def isolated(self, isolation: Isolation = Isolation(), seen: Callable[[list, FailureLog], None] | None = None
                 ) -> Callable[..., list[float | None]]:
        """`fn` wrapped for TRL's GRPOTrainer: same name and signature, but a row that raises, runs
        out of time or returns NaN/inf gets the `on_error` value (logged) instead of stopping training.
        `seen(values, failures)` is told each batch's outcome."""

        def reward(completions, **kwargs):
            failures = FailureLog()
            values = apply_reward(self, list(completions), kwargs, {}, isolation=isolation, failures=failures)
            for message in failures.messages:
                log.warning("%s", message)
            if seen is not None:
                seen(values, failures)
            return values

        reward.__name__ = reward.__qualname__ = getattr(self.fn, "__name__", self.name)
        reward.__doc__ = self.fn.__doc__
        return reward


def isolated_rewards(rewards: Sequence[WeightedReward], isolation: Isolation = Isolation()) -> list[Callable]:
    """The rewards as TRL's GRPOTrainer calls them (`WeightedReward.isolated`, each named after its column).
    A batch on which every reward abstained on every completion (each raised, ran out of time or returned
    None) stops the run with a ValueError naming the first failure: nothing can be learnt from it, and a
    run that goes on would take every later step the same way."""
    batch: list[tuple[list, FailureLog]] = []

    def seen(values: list, failures: FailureLog) -> None:
        batch.append((values, failures))
        if len(batch) < len(rewards):
            return
        outcome, batch[:] = batch[:], []
        if all(v is None for values, _ in outcome for v in values):
            first = next((m for _, f in outcome for m in f.messages), "every reward returned None")
            raise ValueError(f"every reward failed on every completion of a training batch ({first}); "
                             "nothing to learn from; fix the reward (`rftcli score` on a few rollouts shows every failure)")

    funcs = []
    for r in rewards:
        fn = r.isolated(isolation, seen)
        fn.__name__ = fn.__qualname__ = r.name  # metrics are named rewards/<name>/mean, as score's columns
        funcs.append(fn)
    return funcs


def load_rewards(specs: Sequence[str]) -> list[WeightedReward]:
    """The rewards `NAME[=WEIGHT]` specs name; names (the column suffixes) must be unique."""
    out = [WeightedReward(reward_name(spec), weight, get_reward(spec)) for spec, weight in parse_weighted(list(specs))]
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise ValueError(f"reward names must be unique, got {', '.join(names)}")
    return out


class _OutOfTime(Exception):
    pass


def _row_kwargs(columns: Mapping[str, Any], i: int, n: int) -> dict[str, Any]:
    # Per-row slices of the columns; other keyword arguments (TRL's trainer_state, log_metric) as they are.
    return {k: [v[i]] if _is_column(v, n) else v for k, v in columns.items()}


def _is_column(value: Any, n: int) -> bool:
    return hasattr(value, "__len__") and hasattr(value, "__getitem__") and not isinstance(value, (str, bytes, dict)) \
        and len(value) == n


def _call(reward: WeightedReward, completions: list, columns: Mapping[str, Any], timeout_s: float) -> list:
    values: list = []
    with time_limit(timeout_s) as limit:
        try:
            values = list(reward.fn(completions, **columns))
        except TimeLimitExpired as exc:
            if exc.owner is not limit:  # an outer limit's, or a stale one: not ours to handle
                raise
            raise _OutOfTime from None
    if limit.expired:
        raise _OutOfTime
    if len(values) != len(completions):
        raise ValueError(f"returned {len(values)} values for {len(completions)} completions")
    return [None if v is None else float(v) for v in values]


def _describe(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def apply_reward(reward: WeightedReward, completions: list, columns: Mapping[str, Any], errors: dict[str, int], *,
                 isolation: Isolation = Isolation(), failures: FailureLog | None = None, offset: int = 0,
                 tick: Callable[[], None] | None = None) -> list[float | None]:
    """One reward on a batch; on failure row by row (see the module docstring). `errors` counts rows
    that raised or returned a non-finite value, per reward; `failures` (optional) also gets timeouts and
    messages, which are logged here when it is not given; `offset` numbers the rows; `tick` is called
    after each call."""
    n = len(completions)
    local = FailureLog() if failures is None else failures

    def failed(i: int, timed_out: bool, detail: str) -> float | None:
        if not timed_out:
            errors[reward.name] = errors.get(reward.name, 0) + 1
        local.record(reward.name, offset + i, timed_out, detail)
        return isolation.fill

    def finite(i: int, value: float | None) -> float | None:
        if value is None or math.isfinite(value):
            return value
        return failed(i, False, f"returned {value}")  # nan, inf or -inf

    values: list[float | None] = []
    batch_error: tuple[bool, str] | None = None
    try:
        values = _call(reward, completions, columns, isolation.timeout_s)
    except _OutOfTime:
        batch_error = (True, f"no result within {isolation.timeout_s:g} s")
    except (Exception, SystemExit) as err:
        batch_error = (False, _describe(err))
    if tick:
        tick()
    if batch_error is not None:
        values = []
        for i in range(n):
            if n == 1:  # the batch was this row: no need to call again
                values.append(failed(i, *batch_error))
                continue
            try:
                value = _call(reward, [completions[i]], _row_kwargs(columns, i, n), isolation.timeout_s)[0]
            except _OutOfTime:
                value = failed(i, True, f"no result within {isolation.timeout_s:g} s")
            except (Exception, SystemExit) as err:
                value = failed(i, False, _describe(err))
            else:
                value = finite(i, value)
            finally:
                if tick:
                    tick()
            values.append(value)
    else:
        values = [finite(i, v) for i, v in enumerate(values)]
    if failures is None:
        for message in local.messages:
            log.warning("%s", message)
    return values


def weighted_total(rewards: Sequence[WeightedReward], per: Mapping[str, list[float | None]], n: int) -> list[float]:
    """The weighted sum per row; an abstention (None) counts 0."""
    return [sum(r.weight * (per[r.name][i] or 0.0) for r in rewards) for i in range(n)]


def score_columns(rewards: Sequence[WeightedReward], completions: list, columns: Mapping[str, list[Any]],
                  errors: dict[str, int], *, isolation: Isolation = Isolation(), failures: FailureLog | None = None,
                  offset: int = 0, tick: Callable[[], None] | None = None,
                  ) -> tuple[dict[str, list[float | None]], list[float]]:
    """Per-function reward columns and their weighted total for one batch (see `apply_reward`)."""
    per = {r.name: apply_reward(r, completions, columns, errors, isolation=isolation, failures=failures,
                                offset=offset, tick=tick) for r in rewards}
    return per, weighted_total(rewards, per, len(completions))
