"""Manifests: how an artifact was made.

Every Parquet artifact carries its manifest as JSON in the file's key-value metadata
(`rftcli.manifest`); every checkpoint folder carries the same JSON as `rftcli_manifest.json`. A manifest
records the stage, its resolved config, its inputs with content hashes, the package versions, the seed,
and (for checkpoints) the base model the next stage should load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

CHECKPOINT_MANIFEST = "rftcli_manifest.json"
_PACKAGES = ("rftcli", "torch", "transformers", "trl", "peft", "accelerate", "pyarrow", "datasets", "bitsandbytes")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def content_hash(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def jsonable(value: Any) -> Any:
    """Turn a config (frozen dataclass with Paths and tuples) into plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def make_manifest(stage: str, config: Any, inputs: dict[str, str | Path] | None = None, seed: int | None = None,
                  **extra: Any) -> dict[str, Any]:
    """Build the manifest of one stage run. `inputs` maps a role ("dataset", "model") to a path; files
    and folders are hashed, other strings (hub ids, built-in names: deterministic, so their name is
    their identity) are recorded as they are."""
    recorded = {}
    for role, value in (inputs or {}).items():
        p = Path(value)
        recorded[role] = {"path": str(value), "hash": content_hash(p) if p.exists() else str(value)}
    manifest = {
        "stage": stage,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": jsonable(config),
        "inputs": recorded,
        "seed": seed,
        "packages": package_versions(),
    }
    manifest.update(jsonable(extra))
    return manifest


def write_checkpoint_manifest(folder: str | Path, manifest: dict[str, Any]) -> None:
    Path(folder, CHECKPOINT_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_checkpoint_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of an rftcli checkpoint folder, or None for a folder rftcli did not write."""
    path = Path(folder, CHECKPOINT_MANIFEST)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno} column {err.colno})") from None
    except (UnicodeDecodeError, RecursionError):
        raise ValueError(f"{path}: not valid JSON") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: not a JSON object, so not an rftcli manifest")
    return manifest
