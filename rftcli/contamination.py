"""What a row is, by content, and which rows a checkpoint was trained on.

A row's content hash is the first 8 bytes of sha256 over its prompt, its answer and the sha256 of each of
its images' stored bytes: two rows with the same question about the same pixels and the same answer are
the same item, whatever their ids, splits or files. prepare-data uses it to keep splits apart; training
stages record it; eval checks it.

Training record. `sft-coldstart` and `train-grpo` write into the checkpoint's manifest a `training_data`
entry: every row content hash the checkpoint or its ancestors trained on (sorted, packed 8 bytes each,
base64: 3,600 rows take 38 kB of JSON, 100k rows about 1 MB) and, per training run, the table, its
content hash, the split and the row count. The record is inherited: a run starting from an rftcli
checkpoint (or an adapter whose chain of bases holds one) adds its rows to the base's; `merge` keeps the
adapter's. `eval` reads the same chain for each model, so a model trained on part of the evaluated rows
is reported with the count and the accuracy on the rows it never saw. Models rftcli did not train
(hub ids, built-ins, folders without a record) count as having seen none, which `recorded` says.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HASH_BYTES = 8


def content_hash(prompt: str, answer: str, image_digests: Iterable[str]) -> bytes:
    """The content identity of a row from its prompt, answer and the hex sha256 of each stored image."""
    h = hashlib.sha256()
    h.update(prompt.encode())
    h.update(b"\0")
    h.update(answer.encode())
    for digest in image_digests:
        h.update(b"\0" + digest.encode())
    return h.digest()[:HASH_BYTES]


def row_hash(row: Mapping[str, Any]) -> bytes:
    """`content_hash` of a row holding `prompt`, `answer` and `images` ({bytes, path} structs)."""
    digests = [hashlib.sha256(img["bytes"]).hexdigest() for img in row.get("images") or []]
    return content_hash(row["prompt"], row["answer"], digests)


def table_hashes(table) -> list[bytes]:
    """`row_hash` of every row of a pyarrow table with prompt, answer and images columns."""
    prompts, answers = table["prompt"].to_pylist(), table["answer"].to_pylist()
    images = table["images"].to_pylist()
    return [row_hash({"prompt": p, "answer": a, "images": i}) for p, a, i in zip(prompts, answers, images, strict=True)]


def pack(hashes: Iterable[bytes]) -> str:
    return base64.b64encode(b"".join(sorted(set(hashes)))).decode()


def unpack(text: str) -> set[bytes]:
    raw = base64.b64decode(text)
    if len(raw) % HASH_BYTES:
        raise ValueError(f"row_hashes: {len(raw)} bytes is not a whole number of {HASH_BYTES}-byte hashes")
    return {raw[i:i + HASH_BYTES] for i in range(0, len(raw), HASH_BYTES)}


@dataclass
class Lineage:
    """The rows a model and its ancestors trained on, as far as rftcli recorded them."""

    hashes: set[bytes] = field(default_factory=set)
    runs: list[dict[str, Any]] = field(default_factory=list)
    """One entry per training run: stage, dataset, dataset_hash, split, rows, checkpoint."""
    recorded: bool = False
    """Whether any checkpoint of the chain carries a training record."""

    def record(self) -> dict[str, Any]:
        """The manifest's `training_data` entry."""
        return {"rows": len(self.hashes), "runs": self.runs, "row_hashes": pack(self.hashes)}


def _checkpoints(spec: str) -> list[str]:
    """`spec` and, for an adapter, the folders of its chain of bases (as far as they are folders)."""
    from rftcli import tiny_model
    from rftcli.loading import adapter_base, is_adapter

    chain, seen, current = [], set(), spec
    while current and not tiny_model.is_builtin(current) and Path(current).is_dir():
        if os.path.realpath(current) in seen:
            break
        seen.add(os.path.realpath(current))
        chain.append(current)
        try:
            current = adapter_base(current) if is_adapter(current) else None
        except ValueError:  # an adapter that names no base: nothing further to read
            break
    return chain


def lineage_of(spec: str) -> Lineage:
    """The training record of a model spec: the union over its checkpoint and its chain of bases."""
    from rftcli.manifest import CHECKPOINT_MANIFEST, read_checkpoint_manifest

    out = Lineage()
    for folder in _checkpoints(spec):
        data = (read_checkpoint_manifest(folder) or {}).get("training_data")
        if data is None:
            continue
        try:
            out.hashes |= unpack(data["row_hashes"])
            out.runs += [r for r in data.get("runs", []) if r not in out.runs]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{Path(folder, CHECKPOINT_MANIFEST)}: training_data is damaged ({err})") from None
        out.recorded = True
    return out


def training_record(base: str, stage: str, dataset: Path, dataset_hash: str, split: str | None,
                    hashes: Sequence[bytes], checkpoint: Path) -> dict[str, Any]:
    """The `training_data` entry of a checkpoint trained from `base` on rows with these content hashes."""
    lineage = lineage_of(base)
    lineage.hashes |= set(hashes)
    lineage.runs.append({"stage": stage, "dataset": str(dataset), "dataset_hash": dataset_hash, "split": split,
                         "rows": len(set(hashes)), "checkpoint": str(checkpoint)})
    return lineage.record()


def seen_ids(ids: Sequence[str], hashes: Sequence[bytes], lineage: Lineage) -> set[str]:
    """The ids whose content the lineage trained on."""
    return {i for i, h in zip(ids, hashes, strict=True) if h in lineage.hashes}


def merged_record(*specs: str) -> dict[str, Any] | None:
    """The `training_data` entry of a model made from these (merge: the adapter and its base); None when none
    of them carries a record."""
    out = Lineage()
    for spec in specs:
        part = lineage_of(spec)
        out.hashes |= part.hashes
        out.runs += [r for r in part.runs if r not in out.runs]
        out.recorded = out.recorded or part.recorded
    return out.record() if out.recorded else None


def offline_hashes(rollouts: Path, rows: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """Content hashes of the prompts offline GRPO trains on: its rows hold id, prompt and images; the answers
    are read from the rollouts file by id."""
    import pyarrow.parquet as pq

    table = pq.read_table(rollouts, columns=["id", "answer"])
    answers = dict(zip(table["id"].to_pylist(), table["answer"].to_pylist(), strict=True))
    hashes: dict[str, bytes] = {}
    for row in rows:
        if row["id"] not in hashes:
            hashes[row["id"]] = row_hash({"prompt": row["prompt"], "answer": answers[row["id"]], "images": row["images"]})
    return list(hashes.values())


def eval_report(spec: str, rows: Sequence[Mapping[str, Any]], hash_of: Mapping[str, bytes]) -> dict[str, Any]:
    """What eval says of one model: how many evaluated prompts it (or an ancestor) trained on, and the
    accuracy (mean of `correct` over samples, as `accuracy`) on the prompts it never saw."""
    lineage = lineage_of(spec)
    prompts = {r["id"] for r in rows}
    seen = {pid for pid in prompts if hash_of[pid] in lineage.hashes}
    unseen_rows = [r for r in rows if r["id"] not in seen]
    accuracy = sum(bool(r["correct"]) for r in unseen_rows) / len(unseen_rows) if unseen_rows else float("nan")
    return {"recorded": lineage.recorded, "trained_rows": len(seen), "unseen_rows": len(prompts) - len(seen),
            "accuracy_unseen": accuracy}


def warning(label: str, summary: Mapping[str, Any]) -> str | None:
    """The one-line warning for a model that trained on evaluated rows, else None."""
    c = summary["contamination"]
    if not c["trained_rows"]:
        return None
    unseen = (f"accuracy on the {c['unseen_rows']} unseen: {c['accuracy_unseen']:.3f}" if c["unseen_rows"]
              else "no evaluated row is unseen")
    return (f"warning: {label} (or a model it was trained from) trained on {c['trained_rows']} of the "
            f"{c['trained_rows'] + c['unseen_rows']} evaluated rows; accuracy {summary['accuracy']:.3f} overall, {unseen}")
