"""merge: a PEFT adapter folder + its base -> one standalone Hugging Face model folder.

The base is read from the adapter's `rftcli_manifest.json` (else PEFT's `base_model_name_or_path`),
overridable with `--base`; a base that is itself an adapter is merged first. The base is always
loaded in full precision (float32), so a QLoRA adapter is merged into real weights, never into 4-bit
ones.

Verification, on two probe inputs with an image each, before the folder is moved into place:
1. the merged float32 model's logits against the adapter model's (base + unmerged adapter): the merge's
   own error, at most `tolerance`;
2. the saved folder, reloaded with plain `AutoModelForImageTextToText`, against the merged model as it
   was meant to be saved (its weights rounded to `dtype`): at most `tolerance`, so the files hold what
   was merged.
A 16-bit `dtype` rounds every weight, which moves logits by far more than a wrong merge would hide in; that
rounding is measured and reported (`rounding_effect`), not held to the tolerance. Above the tolerance,
or with non-finite logits, the merge is refused and nothing is written.

The folder is laid out like a Hub checkpoint, as vLLM and transformers load it: `config.json` (with
`architectures` and the saved dtype), `generation_config.json`, `model.safetensors` (sharded with an
index above 50 GB), tokenizer files, `chat_template.jinja`, `processor_config.json`, and also the
image processor's `preprocessor_config.json`: processors saved where torchvision is missing carry no
video processor, and transformers on a machine with torchvision (vLLM's) builds the Qwen-VL video
processor from `preprocessor_config.json` when `processor_config.json` has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftcli.atomic import atomic_output, check_output
from rftcli.contamination import merged_record
from rftcli.families.support import refuse
from rftcli.manifest import make_manifest, write_checkpoint_manifest
from rftcli.tasks import INSTRUCTION

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Config:
    adapter: Path
    """Adapter folder (LoRA or QLoRA) to merge."""
    out: Path
    """Output model folder."""
    base: str | None = None
    """Base model (default: read from the adapter's manifest)."""
    dtype: str = "float32"
    """dtype of the saved weights: float32, bfloat16, float16."""
    tolerance: float = 1e-4
    """Largest allowed |logit| difference of the merge and of the saved files (float32 comparisons)."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint."""
    allow_pickle: bool = False
    """Load weights stored only as pickle files (.bin/.pt), which can run code (off: safetensors only)."""
    overwrite: bool = False
    """Replace an existing output."""

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError("dtype must be float32, bfloat16 or float16")
        if not self.tolerance > 0:
            raise ValueError("tolerance must be > 0")


@dataclass(frozen=True)
class Result:
    path: Path
    base: str
    max_logit_diff: float
    """Merged model vs adapter model, float32 (for a float32 save: the reloaded folder)."""
    saved_logit_diff: float
    """Reloaded folder vs the merged model rounded to `dtype`."""
    rounding_effect: float
    """Reloaded folder vs adapter model: what saving in `dtype` changed (about 0 for float32)."""
    adapter_effect: float
    """Adapter model vs its base: how much the adapter moves the logits."""


def probe_rows() -> list[dict]:
    """Two fixed inputs with an image each; enough to exercise vision tower, text and lm head."""
    import io

    from PIL import Image

    rows = []
    for i, color in enumerate([(220, 30, 30), (30, 60, 220)]):
        img = Image.new("RGB", (56, 56), (255, 255, 255))
        img.paste(color, (14 * i, 14, 14 * i + 28, 42))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        rows.append({"system": None, "prompt": f"What is in the image? {INSTRUCTION}",
                     "images": [{"bytes": buf.getvalue(), "path": None}]})
    return rows


def probe_logits(model, processor):
    import torch

    from rftcli.generation import encode_prompts

    inputs = encode_prompts(processor, probe_rows(), next(model.parameters()).device)
    with torch.no_grad():
        return model(**inputs).logits.float()  # [2, L, V]


def _max_diff(a, b) -> float:
    return float((a - b).abs().max())  # NaN when either side is not finite


def _check(diff: float, limit: float, adapter: Path, what: str) -> None:
    # `not <=` also refuses NaN.
    if not diff <= limit:
        raise ValueError(f"{adapter}: {what} differ by {diff:.3g} (> {limit:g}); nothing written")


def _cast_parameters(model: Any, dtype: Any) -> None:
    # Parameters only: buffers such as rotary inv_freq are recomputed in float32 on load, not saved.
    for param in model.parameters():
        param.data = param.data.to(dtype)


def save_processor(processor: Any, folder: Path) -> None:
    """The processor as transformers 5 saves it, plus the image processor's `preprocessor_config.json`."""
    processor.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)


def run(config: Config) -> Result:
    import torch
    from transformers import AutoModelForImageTextToText

    from rftcli.loading import is_adapter, load_model

    check_output(config.out, config.overwrite, inputs=[config.adapter, config.base])
    if not is_adapter(str(config.adapter)):
        raise ValueError(f"{config.adapter}: not an adapter folder (no adapter_config.json)")
    refuse("merge", str(config.adapter), config.base)  # a family the stack cannot run
    loaded = load_model(str(config.adapter), base=config.base, dtype="float32",
                        trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle)
    model = loaded.model.eval()
    adapter_logits = probe_logits(model, loaded.processor)  # [2, L, V]
    if not bool(torch.isfinite(adapter_logits).all()):
        raise ValueError(f"{config.adapter}: the adapter model's logits are not finite (NaN or inf in the adapter's "
                         "weights?); nothing written")
    with model.disable_adapter():
        base_logits = probe_logits(model, loaded.processor)
    merged = model.merge_and_unload().eval()
    merged_logits = probe_logits(merged, loaded.processor)
    merge_diff = _max_diff(merged_logits, adapter_logits)
    _check(merge_diff, config.tolerance, config.adapter, "the merged model's logits and the adapter model's")
    manifest = make_manifest("merge", config, {"adapter": config.adapter}, base_model=None, kind="full",
                             merged_from={"adapter": str(config.adapter), "base": loaded.base})
    trained = merged_record(str(config.adapter), loaded.base)  # the adapter's training record, and its base's
    if trained is not None:
        manifest["training_data"] = trained
    dtype = getattr(torch, config.dtype)
    with atomic_output(config.out, overwrite=config.overwrite, directory=True) as tmp:
        _cast_parameters(merged, dtype)
        merged.save_pretrained(tmp, safe_serialization=True)
        save_processor(loaded.processor, tmp)
        if dtype != torch.float32:
            _cast_parameters(merged, torch.float32)  # the rounded weights, computed in float32
            merged_logits = probe_logits(merged, loaded.processor)
        del merged
        reloaded = AutoModelForImageTextToText.from_pretrained(tmp, dtype=torch.float32).eval()
        reloaded_logits = probe_logits(reloaded, loaded.processor)
        del reloaded
        saved_diff = _max_diff(reloaded_logits, merged_logits)
        _check(saved_diff, config.tolerance, config.adapter, "the saved folder's logits and the merged model's")
        rounding = _max_diff(reloaded_logits, adapter_logits)
        max_diff = merge_diff
        if dtype == torch.float32:  # nothing rounded: the saved folder itself must match the adapter model
            max_diff = rounding
            _check(max_diff, config.tolerance, config.adapter, "the saved folder's logits and the adapter model's")
        manifest["verification"] = {"max_logit_diff": max_diff, "saved_logit_diff": saved_diff,
                                    "rounding_effect": rounding, "tolerance": config.tolerance}
        write_checkpoint_manifest(tmp, manifest)
    return Result(path=config.out, base=loaded.base, max_logit_diff=max_diff, saved_logit_diff=saved_diff,
                  rounding_effect=rounding, adapter_effect=_max_diff(adapter_logits, base_logits))
