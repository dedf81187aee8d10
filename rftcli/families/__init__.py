"""Built-in tiny models of the VLM families users bring, beyond Qwen2.5-VL (`rftcli.tiny_model`).

Each family module builds, in-process and offline, a few-hundred-thousand-parameter model of that family's real
architecture class with random weights, a byte-level BPE tokenizer trained here (`tiny_model.build_tokenizer`)
holding the family's own special tokens, the family's real processor class and chat template, and saves it all
with `save_pretrained` so that it loads with the Auto classes like a Hub checkpoint.

    FAMILIES   builtin name -> "module:function"; the function is `build(out_dir: Path, seed: int) -> None`
               and writes model and processor into `out_dir` (an empty temporary folder that
               `tiny_model.build` renames into place)

`tiny_model.build` dispatches here for every name not in `tiny_model.SIZES`.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

FAMILIES: dict[str, str] = {
    "tiny-qwen2-vl": "rftcli.families.qwen:build_qwen2_vl",
    "tiny-qwen3-vl": "rftcli.families.qwen:build_qwen3_vl",
    "tiny-qwen3.5": "rftcli.families.qwen:build_qwen3_5",
    "tiny-internvl": "rftcli.families.internvl:build",
    "tiny-llava-onevision": "rftcli.families.llava_onevision:build",
    "tiny-gemma3": "rftcli.families.gemma3:build",
    "tiny-smolvlm2": "rftcli.families.smolvlm:build",
}
"""Built-in model name (without "builtin:") -> "rftcli.families.<module>:<function>"."""


def save_random_model(model_class: Any, config: Any, processor: Any, generation: dict[str, Any], out_dir: Path,
                      seed: int) -> None:
    """Initialise `model_class(config)` in float32 from `seed` (without touching the caller's RNG), give it a
    generation config of `generation` (special-token ids), and save it and `processor` into `out_dir`."""
    import torch
    from transformers import GenerationConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config).to(torch.float32)
    model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def build_family(name: str, out_dir: Path, seed: int) -> None:
    """Build the built-in family model `name` into the empty folder `out_dir`."""
    module, function = FAMILIES[name].split(":")
    getattr(import_module(module), function)(out_dir, seed)
