"""Which stages run on which model family: the support table, its Markdown matrix, and the refusals it drives.

    SUPPORT    built-in model name -> Row(model_type, refusals): the transformers `model_type` of the family
               (config.json's), and for each cell the stack cannot run, the one-line reason. A cell not listed
               passes; tests/test_families.py runs every cell on the built-in model and holds the table to it.
    CELLS      build, rollout, score, sft-lora, sft-qlora, grpo-online, grpo-offline, merge, eval
    matrix()   the table as Markdown (family x cell, "yes" or "no: reason"), the block README.md holds
               between `<!-- families:start -->` and `<!-- families:end -->`; `python -m rftcli.families
               --matrix` prints it
    refuse(cell, model, base)   a stage calls it before loading: a model of a family whose cell is refused
               (a built-in name, a folder, an adapter on one, or a hub id in the local cache) raises ValueError
               with the reason, so the CLI exits 2 before any work
    refuse_several_images(cell, model, rows, path, positions)   the same for a cell a family runs only on
               prompts of one image (`Row.one_image`), naming the first row that holds several

A family's row is keyed by `model_type`, so a real checkpoint of that architecture meets the same refusal as
the built-in tiny model of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

CELLS = ("build", "rollout", "score", "sft-lora", "sft-qlora", "grpo-online", "grpo-offline", "merge", "eval")


@dataclass(frozen=True)
class Row:
    """One family's line of the support table."""

    model_type: str
    """config.json's `model_type` of the family (e.g. "qwen2_5_vl"); the key a user's checkpoint is matched by."""
    refusals: dict[str, str] = field(default_factory=dict)
    """Cell -> why rftcli refuses it on this stack (one line, no final period). Cells not listed pass."""
    one_image: dict[str, str] = field(default_factory=dict)
    """Cell -> why rftcli refuses it for prompts of several images (prompts of one image pass; one line)."""

    def __post_init__(self) -> None:
        unknown = sorted((set(self.refusals) | set(self.one_image)) - set(CELLS))
        if unknown:
            raise ValueError(f"unknown cell(s) {', '.join(unknown)}; cells are {', '.join(CELLS)}")

    def cells(self) -> dict[str, str | None]:
        """Every cell -> None (passes) or the refusal reason."""
        return {cell: self.refusals.get(cell) for cell in CELLS}


SUPPORT: dict[str, Row] = {
    "tiny-qwen2.5-vl": Row("qwen2_5_vl"),
    "tiny-qwen2-vl": Row("qwen2_vl"),
    "tiny-qwen3-vl": Row("qwen3_vl"),
    "tiny-qwen3.5": Row("qwen3_5"),
    "tiny-gemma3": Row("gemma3"),
    "tiny-smolvlm2": Row("smolvlm"),
    "tiny-internvl": Row("internvl"),
    "tiny-llava-onevision": Row("llava_onevision", one_image={
        "grpo-online": "TRL 1.16's GRPOTrainer drops the processor's batch_num_images, without which LLaVA-OneVision "
                       "cannot place the features of several images; train offline (--rollouts) instead"}),
}
"""Built-in model name (without "builtin:") -> its family's support row; one entry per family."""


def matrix() -> str:
    """The support table as a Markdown table: one line per family, one column per cell."""
    lines = ["| model | " + " | ".join(CELLS) + " |", "|---" * (len(CELLS) + 1) + "|"]
    for name, row in SUPPORT.items():
        cells = [("no: " + reason) if reason else ("one image per prompt: " + row.one_image[cell])
                 if cell in row.one_image else "yes" for cell, reason in row.cells().items()]
        lines.append(f"| `builtin:{name}` ({row.model_type}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def refusal(cell: str, model_type: str | None) -> str | None:
    """Why `cell` is refused for models of `model_type`, or None when it runs (or the type has no row)."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; cells are {', '.join(CELLS)}")
    for row in SUPPORT.values():
        if row.model_type == model_type and row.refusals.get(cell):
            return row.refusals[cell]
    return None


def model_type_of(spec: str, base: str | None = None) -> str | None:
    """config.json's `model_type` of a model argument (an adapter's base for an adapter); None when it has no
    local config.json (a hub id not in the cache)."""
    from rftcli import loading

    path = loading.resolve(spec)
    if loading.is_adapter(path):
        return model_type_of(loading.adapter_base(path, base))
    config = Path(path, "config.json")
    if not config.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(path, "config.json")
        except ValueError:  # not a repo id either
            return None
        if not isinstance(cached, str):
            return None
        config = Path(cached)
    try:
        data = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # the loader's own checks name a damaged file
    return data.get("model_type") if isinstance(data, dict) else None


def refuse(cell: str, spec: str, base: str | None = None) -> None:
    """Raise ValueError ("<cell> is not supported for <model_type> models: <reason>") when the table refuses
    `cell` for the family of model argument `spec`."""
    if not any(row.refusals.get(cell) for row in SUPPORT.values()):
        return  # nothing to look up: the model is not even resolved
    model_type = model_type_of(spec, base)
    reason = refusal(cell, model_type)
    if reason:
        raise ValueError(f"{spec}: {cell} is not supported for {model_type} models on this stack: {reason}")


def refuse_several_images(cell: str, spec: str, rows, path, positions) -> None:
    """Raise ValueError naming file, row and column when the family of model argument `spec` runs `cell` only on
    prompts of one image (`Row.one_image`) and one of `rows` (dicts with `id`, `images`) holds several;
    `positions` maps an id to its row in `path` (`rftcli.limits.row_positions`)."""
    if not any(r.one_image.get(cell) for r in SUPPORT.values()):
        return
    several = next((r for r in rows if len(r.get("images") or []) > 1), None)
    if several is None:
        return
    model_type = model_type_of(spec)
    reason = next((r.one_image[cell] for r in SUPPORT.values() if r.model_type == model_type and cell in r.one_image),
                  None)
    if reason:
        raise ValueError(f"{path}: row {positions.get(several.get('id'), '?')}, column 'images' (id "
                         f"{several.get('id')!r}): {len(several['images'])} images, and {cell} runs {model_type} "
                         f"models on prompts of one image only on this stack: {reason}")
