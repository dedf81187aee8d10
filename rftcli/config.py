"""Stage configs are frozen dataclasses; YAML is just their serialized form.

`build_config(Config, yaml_path, flags)` layers: dataclass defaults < YAML file < flags given on the
command line. Unknown YAML keys are an error naming the file and the key, so a typo never passes
silently. Every YAML value is checked against its setting's type annotation before the config is made
(`_check`): a wrong type is one line naming the file, the setting, what was expected and what was found.
The check looks at a value and, for list settings, at its items only, never deeper: a YAML alias bomb (a
list of lists of lists ... sharing nodes, billions of items if walked) is refused at its first item.
Ranges (a limit >= 1, a temperature > 0) are each Config's `__post_init__`'s to check.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")

# A number written as text: PyYAML (YAML 1.1) reads 1e-4, with no dot, as a string.
_NUMBER_TEXT = re.compile(r"[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(value: Any, hint: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0]) if len(non_none) == 1 else value
    if hint is Path:
        return Path(value)
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner) for v in items)
    if hint is float and isinstance(value, int):
        return float(value)
    return value


class _Mismatch(Exception):
    """A YAML value that does not fit its setting's type; `found` says what it was."""

    def __init__(self, found: str):
        super().__init__(found)
        self.found = found


def _shown(value: Any) -> str:
    """`value` for a message, short and in YAML's words; never walks a list or mapping."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple, set)):
        return "a list"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (bool)"
    text = repr(value) if isinstance(value, (str, int, float)) else str(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _expected(hint: Any) -> str:
    """What a setting of type `hint` takes, in words."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        words = [_expected(a) for a in args if a is not type(None)]
        return " or ".join(words + (["null"] if type(None) in args else []))
    if origin is tuple:
        inner = args[0] if args else str
        return f"a list of {'paths' if inner is Path else 'numbers' if inner is float else 'texts'} (or one)"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    return {int: "a whole number", float: "a number", str: "text", bool: "true or false", Path: "a path"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _scalar(value: Any, hint: Any) -> Any:
    """`value` as a `hint` (int, float, str, bool, Path or a Literal), or _Mismatch."""
    if isinstance(value, (dict, list, tuple, set)) or value is None:
        raise _Mismatch(_shown(value))
    if typing.get_origin(hint) is typing.Literal:
        if any(value == a and type(value) is type(a) for a in typing.get_args(hint)):
            return value
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**1023:
            return float(value)
        if isinstance(value, float) and not math.isnan(value):
            return value
        if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
            return float(value.strip().replace("_", ""))
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Path:
        if isinstance(value, str) and value.strip():
            return Path(value)
        if isinstance(value, Path):
            return value
    else:  # a type no Config uses yet: passed through as before
        return value
    raise _Mismatch(_shown(value))


def _check(value: Any, hint: Any) -> Any:
    """`value` from a YAML file as a setting of type `hint`, or _Mismatch. Lists are looked at one level
    deep: an item that is itself a list or mapping is refused without looking inside it."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _check(value, option)
            except _Mismatch as err:
                if len(options) == 1:
                    raise
                last = err
        raise last
    if origin is tuple:
        inner = args[0] if args else str
        if isinstance(value, (list, tuple)):
            out = []
            for i, item in enumerate(value, 1):
                try:
                    out.append(_scalar(item, inner))
                except _Mismatch as err:
                    raise _Mismatch(f"{err.found} as item {i}") from None
            return tuple(out)
        return (_scalar(value, inner),)  # one value for a list setting: a list of one
    return _scalar(value, hint)


def load_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected a YAML config file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such config file") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}); save the config file as UTF-8") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read the config file ({err.strerror or type(err).__name__})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ValueError(f"{path}:{where} not valid YAML") from None
    except RecursionError:
        raise ValueError(f"{path}: lists or mappings nested too deeply") from None
    except (ValueError, OverflowError) as err:  # a value PyYAML cannot build, e.g. an int of 5000 digits
        why = str(err).strip().splitlines()
        raise ValueError(f"{path}: not valid YAML ({why[0] if why else type(err).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must be a mapping of setting: value")
    return data


def build_config(cls: type[C], yaml_path: Path | None = None, flags: dict[str, Any] | None = None) -> C:
    """Make a `cls` from defaults, then the YAML file's settings, then explicit flags. YAML values are
    checked against the settings' types; flags come typed from the command line and are only converted."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if yaml_path is not None:
        for key, value in load_yaml(yaml_path).items():
            key = str(key).replace("-", "_")
            if key not in names:
                raise ValueError(f"{yaml_path}: unknown setting {key!r}; known: {', '.join(sorted(names))}")
            try:
                values[key] = _check(value, hints[key])
            except _Mismatch as err:
                raise ValueError(f"{yaml_path}: setting {key!r}: expected {_expected(hints[key])}, "
                                 f"found {err.found}") from None
    values.update({k: _coerce(v, hints[k]) for k, v in (flags or {}).items()})
    try:
        return cls(**values)
    except ValueError as err:
        if yaml_path is None:
            raise
        # A setting out of range (the Config's own checks): say where the settings came from.
        first, _, rest = str(err).strip().partition("\n")
        where = f"{yaml_path} and the command line" if flags else str(yaml_path)
        raise ValueError(f"{first} (settings from {where})" + (f"\n{rest}" if rest else "")) from err


def defaults(cls: type[C]) -> Any:
    """The dataclass's default values by attribute, for CLI option defaults."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return types.SimpleNamespace(**out)
