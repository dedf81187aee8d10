"""Stage configs are frozen dataclasses; YAML is just their serialized form.

`build_config(Config, yaml_path, flags)` layers: dataclass defaults < YAML file < flags given on the
command line. Unknown YAML keys are an error naming the file and the key, so a typo never passes
silently.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


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


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ValueError(f"{path}: no such config file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ValueError(f"{path}:{where} not valid YAML") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must be a mapping of setting: value")
    return data


def build_config(cls: type[C], yaml_path: Path | None = None, flags: dict[str, Any] | None = None) -> C:
    """Make a `cls` from defaults, then the YAML file's settings, then explicit flags."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if yaml_path is not None:
        for key, value in load_yaml(yaml_path).items():
            key = str(key).replace("-", "_")
            if key not in names:
                raise ValueError(f"{yaml_path}: unknown setting {key!r}; known: {', '.join(sorted(names))}")
            values[key] = value
    values.update(flags or {})
    return cls(**{k: _coerce(v, hints[k]) for k, v in values.items()})


def defaults(cls: type[C]) -> Any:
    """The dataclass's default values by attribute, for CLI option defaults."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return types.SimpleNamespace(**out)
