"""Where the parts of a vision-language model live: its language model, and its vision side (tower and projector).

`rftcli.training` picks LoRA targets with it; `rftcli.loading` keeps the vision side out of 4-bit with it.
"""

from __future__ import annotations

from typing import Any

# Where the parts of a transformers-5 vision-language model live, by attribute name. Checked against
# Qwen2/2.5/3-VL, GLM-4V (`visual`), LLaVA(-NeXT/-OneVision), Gemma 3, PaliGemma, InternVL, Mistral 3,
# LFM2-VL, Florence-2 (`vision_tower` + `multi_modal_projector`), Idefics3 / SmolVLM (`text_model`,
# `vision_model`, `connector`), Mllama (`vision_model`), Janus (`aligner`).
LANGUAGE_MODULES = ("language_model", "text_model")
VISION_MODULES = ("visual", "vision_tower", "vision_model", "multi_modal_projector", "connector", "aligner")


def model_parts(model: Any) -> dict[str, list[str]]:
    """Qualified names of the language model and of the vision side (tower and projector) of `model`;
    the outermost module of each listed name, so nested towers are not counted twice."""
    parts: dict[str, list[str]] = {"language": [], "vision": []}
    for name, _ in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        part = "language" if leaf in LANGUAGE_MODULES else "vision" if leaf in VISION_MODULES else None
        if part and not any(name.startswith(p + ".") for ps in parts.values() for p in ps):
            parts[part].append(name)
    return parts


def vision_module_pattern() -> str:
    """A regex matching the qualified name of a vision-side module (`model.visual`, `model.vision_tower`, ...)
    at a name boundary, whatever path leads to it."""
    return rf"(?:.*\.)?(?:{'|'.join(VISION_MODULES)})"
