"""Reward functions and how to find them.

A reward is a plain function with TRL's signature, `fn(completions, **columns) -> list[float | None]`
(None abstains). `completions` holds strings or conversational message lists; dataset columns
(`answer`, `answer_type`, `choices`, ...) arrive as keyword lists of the same length, and a reward
ignores the ones it does not use.

A reward spec names one:
    a built-in name (below)          e.g. accuracy, format, iou_50
    pkg.module:function              imported
    path/to/file.py:function         loaded from a file (relative to the working dir)
and may carry a weight, NAME=WEIGHT (default 1.0).

Built in (each module's docstring has the rules and examples; the extraction policy they share is in
text.py: the answer slot only - <answer>, else \\boxed{} - numbers as whole tokens, two answers wrong):
    accuracy          the answer in the slot matches, compared by answer type             (accuracy.py)
    accuracy_boxed    the same (its old name)
    accuracy_strict   the same, answer only from <answer>
    accuracy_lenient  the same, else the last choice phrase / whole-token number (opt-in)
    format            = format_strict: exactly <think>...</think><answer>...</answer>,     (format.py)
                      the think block at least 3 words
    format_lenient    a think block, then somewhere an answer block
    iou               mean IoU of predicted vs ground-truth boxes, in [0, 1]               (grounding.py)
    iou_50, iou_75    share of boxes found with IoU >= 0.5 / 0.75
    iou_lenient       iou, also reading boxes outside the slot (opt-in)
    count             the right whole number ("3", "three cups", "There are 3 cups.");     (count.py)
                      abstains on non-counts
    count_lenient     the same, else the last whole-token number (opt-in)
    overlong          DAPO's soft overlong penalty, 0 down to -1                           (length.py)
    cosine_length     accuracy scaled by length along a half cosine (replaces accuracy)
    repetition        -(share of repeated word 3-grams), in [-1, 0]
Variants with other settings come from factories in those modules (`make_accuracy`, `make_count`,
`make_iou`, `make_format(min_think_words=)`, `soft_overlong`, `make_cosine_length`, `make_repetition`),
assigned in a file of your own.

Examples:
    >>> parse_weighted(["accuracy", "format=0.2"])
    [('accuracy', 1.0), ('format', 0.2)]
    >>> get_reward("format")(["<think>a b c</think><answer>d</answer>", "<think>.</think><answer>d</answer>"])
    [1.0, 0.0]
    >>> reward_name("my_rewards.py:length_penalty")
    'length_penalty'
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

from rftcli.rewards import accuracy as _accuracy
from rftcli.rewards import count as _count
from rftcli.rewards import format as _format
from rftcli.rewards import grounding as _grounding
from rftcli.rewards import length as _length
from rftcli.rewards.text import completion_text, extract_answer

__all__ = ["builtin_rewards", "completion_text", "extract_answer", "get_reward", "parse_weighted", "reward_name"]

RewardFn = Callable[..., list]

_BUILTIN: dict[str, RewardFn] = {
    "accuracy": _accuracy.accuracy,
    "accuracy_boxed": _accuracy.accuracy_boxed,
    "accuracy_strict": _accuracy.accuracy_strict,
    "accuracy_lenient": _accuracy.accuracy_lenient,
    "format": _format.format_strict,
    "format_strict": _format.format_strict,
    "format_lenient": _format.format_lenient,
    "iou": _grounding.iou,
    "iou_50": _grounding.iou_50,
    "iou_75": _grounding.iou_75,
    "iou_lenient": _grounding.iou_lenient,
    "count": _count.count,
    "count_lenient": _count.count_lenient,
    "overlong": _length.overlong,
    "cosine_length": _length.cosine_length,
    "repetition": _length.repetition,
}


def builtin_rewards() -> dict[str, RewardFn]:
    """Built-in rewards by name (a copy)."""
    return dict(_BUILTIN)


def get_reward(spec: str) -> RewardFn:
    """The reward function a spec names (built-in name, `pkg.module:function` or `file.py:function`)."""
    spec = spec.strip()
    if spec in _BUILTIN:
        return _BUILTIN[spec]
    if ":" not in spec:
        raise ValueError(f"unknown reward {spec!r}; built-in rewards are {', '.join(sorted(_BUILTIN))}, "
                         "or give pkg.module:function or path/to/file.py:function")
    where, _, attr = spec.rpartition(":")
    module = _load_file(where, spec) if where.endswith(".py") else _import(where, spec)
    fn = getattr(module, attr, None)
    if fn is None:
        raise ValueError(f"reward {spec!r}: {where} has no attribute {attr!r}")
    if not callable(fn):
        raise ValueError(f"reward {spec!r}: {attr!r} is not callable")
    return fn


def _import(module_name: str, spec: str):
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"reward {spec!r}: cannot import {module_name!r} ({e})") from e
    except Exception as e:  # the module's own code failed while it was imported
        raise ValueError(f"reward {spec!r}: importing {module_name!r} raised {_describe_error(e)}") from e


def _describe_error(err: BaseException) -> str:
    where = f" at line {err.lineno}" if isinstance(err, SyntaxError) and err.lineno else ""
    text = (str(err.msg if isinstance(err, SyntaxError) else err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}{where}" + (f": {text}" if text else "")


def _load_file(path_text: str, spec: str):
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"reward {spec!r}: no file {path}")
    # One module per file, named by its path, so loading the same file twice gives the same functions.
    stem = re.sub(r"\W", "_", path.stem)
    name = f"rftcli_reward_{stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before exec, so dataclasses and pickling inside the file work
    try:
        module_spec.loader.exec_module(module)
    except BaseException as err:
        del sys.modules[name]
        if isinstance(err, KeyboardInterrupt):
            raise
        raise ValueError(f"reward {spec!r}: loading {path} raised {_describe_error(err)}") from err
    return module


def reward_name(spec: str) -> str:
    """A column-safe name for a spec: the built-in name, else the function name (`pkg.mod:fn` -> `fn`)."""
    name = spec.strip().rpartition(":")[2]
    return re.sub(r"\W", "_", name) or "reward"


def parse_weighted(specs: list[str]) -> list[tuple[str, float]]:
    """Split `NAME[=WEIGHT]` specs into (name, weight); the weight defaults to 1.0."""
    out = []
    for item in specs:
        spec, sep, weight_text = item.strip().rpartition("=") if "=" in item else (item.strip(), "", "")
        spec = spec.strip()
        if not spec:
            raise ValueError(f"reward spec {item!r} has no name (write NAME[=WEIGHT], e.g. format=0.2)")
        if not sep:
            out.append((spec, 1.0))
            continue
        try:
            weight = float(weight_text)
        except ValueError:
            raise ValueError(f"reward {item!r}: weight {weight_text.strip()!r} is not a number "
                             "(write NAME=WEIGHT, e.g. format=0.2)") from None
        if not math.isfinite(weight):
            raise ValueError(f"reward {item!r}: weight must be finite, got {weight_text.strip()!r}")
        out.append((spec, weight))
    return out
