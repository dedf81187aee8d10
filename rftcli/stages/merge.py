"""merge: a PEFT adapter folder + its base -> one standalone Hugging Face model folder.

The base is read from the adapter's `rftcli_manifest.json` (else PEFT's `base_model_name_or_path`),
overridable with `--base`; a base that is itself an adapter is merged first. The base is always
loaded in full precision, so a QLoRA adapter is merged into real weights, never into 4-bit ones.

Before finishing, the saved folder is reloaded with plain `AutoModelForImageTextToText` and its logits
on probe inputs are compared with the adapter model's; above `tolerance` the merge is refused and
nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rftcli.atomic import atomic_output, check_output
from rftcli.manifest import make_manifest, write_checkpoint_manifest
from rftcli.tasks import INSTRUCTION


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
    """Largest allowed |logit| difference between merged and adapter model (float32 comparison)."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint."""
    overwrite: bool = False
    """Replace an existing output."""

    def __post_init__(self):
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError("dtype must be float32, bfloat16 or float16")


@dataclass(frozen=True)
class Result:
    path: Path
    base: str
    max_logit_diff: float
    adapter_effect: float


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


def run(config: Config) -> Result:
    import torch
    from transformers import AutoModelForImageTextToText

    from rftcli.loading import is_adapter, load_model

    check_output(config.out, config.overwrite)
    if not is_adapter(str(config.adapter)):
        raise ValueError(f"{config.adapter}: not an adapter folder (no adapter_config.json)")
    loaded = load_model(str(config.adapter), base=config.base, dtype="float32",
                        trust_remote_code=config.trust_remote_code)
    model = loaded.model.eval()
    adapter_logits = probe_logits(model, loaded.processor)
    with model.disable_adapter():
        base_logits = probe_logits(model, loaded.processor)
    merged = model.merge_and_unload()
    manifest = make_manifest("merge", config, {"adapter": config.adapter}, base_model=None, kind="full",
                             merged_from={"adapter": str(config.adapter), "base": loaded.base})
    dtype = getattr(torch, config.dtype)
    with atomic_output(config.out, overwrite=config.overwrite, directory=True) as tmp:
        merged.to(dtype).save_pretrained(tmp, safe_serialization=True)
        loaded.processor.save_pretrained(tmp)
        reloaded = AutoModelForImageTextToText.from_pretrained(tmp, dtype=torch.float32).eval()
        diff = float((probe_logits(reloaded, loaded.processor) - adapter_logits).abs().max())
        # Saving in a 16-bit dtype rounds weights; allow for that rounding, not for a wrong merge.
        limit = config.tolerance if config.dtype == "float32" else max(config.tolerance, 0.05)
        if not diff <= limit:
            raise ValueError(f"{config.adapter}: merged model's logits differ from the adapter model's by {diff:.3g} "
                             f"(> {limit:g}); nothing written")
        manifest["verification"] = {"max_logit_diff": diff, "tolerance": limit}
        write_checkpoint_manifest(tmp, manifest)
    effect = float((adapter_logits - base_logits).abs().max())
    return Result(path=config.out, base=loaded.base, max_logit_diff=diff, adapter_effect=effect)
