"""Load rftcli's checkpoint folders with plain transformers and PEFT: Qwen-VL processors without
torchvision, and without the libraries' notices that are not about the user's model.

Qwen2.5-VL's processor declares a video processor, and transformers only provides video processors
when torchvision imports. Where it doesn't (CPU machines whose only torchvision wheel is a CUDA build
that fails to import), building or loading the processor fails on the video processor
(`VIDEO_PROCESSOR_MAPPING ... _extra_content`, then a missing `video_preprocessor_config.json`).
rftcli only feeds images, so on such machines we tell `ProcessorMixin` that processors have no
"video" attributes. Where torchvision is available this is a no-op. No saved file can avoid it: the
processor class itself declares the video processor, and transformers has no video processor that runs
without torchvision.

SmolVLM2's `SmolVLMProcessor` needs the `num2words` package at construction, and its `apply_chat_template` reads
its video processor even for images, so without torchvision (or num2words) it cannot prompt at all.
`processor_class_for` then names `Idefics3Processor`, which writes the same image prompt string (fake tokens,
`<global-img>`, row/column tags of split images, `image_seq_len` `<image>` tokens) and pixel layout from the same
folder (its tokenizer, image processor, chat template and `image_seq_len`).

`quiet_loading_notices` silences, by their exact text, two notices that loading a folder prints with
the pinned stack: bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community" (on CPUs
with AVX512-BF16 it looks for an optional kernel package; without it, it uses its own kernel, so
nothing is lost) and transformers' FutureWarning that `is_gradient_checkpointing` is deprecated (PEFT
reads the old name); also DeepSpeed's "Setting accelerator to CPU" where DeepSpeed is installed.
"""

from __future__ import annotations

_PATCHED_MARK = "_rftcli_drops_video_attributes"
# (logger, the start of the message it logs) for each library notice `quiet_loading_notices` drops.
_NOTICES = (("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
            ("DeepSpeed", "Setting accelerator to CPU"))
_DEPRECATION = r"`is_gradient_checkpointing` is deprecated"


class _DropNotice:
    """A logging filter dropping the records whose message starts with `prefix`."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def filter(self, record) -> bool:
        return not record.getMessage().startswith(self.prefix)


def quiet_loading_notices() -> None:
    """Drop the library notices listed in the module docstring, and nothing else; call it before importing
    peft (bitsandbytes logs its notice when imported). Idempotent."""
    import logging
    import warnings

    for name, prefix in _NOTICES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropNotice(prefix))
    warnings.filterwarnings("ignore", message=_DEPRECATION, category=FutureWarning)


def ensure_processor_loads_without_torchvision() -> None:
    """Drop video sub-processors from `ProcessorMixin.get_attributes` when torchvision is missing.

    Idempotent: calling it again does nothing. Affects every processor class in this process.
    """
    from transformers.processing_utils import ProcessorMixin
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        return
    original_func = ProcessorMixin.__dict__["get_attributes"].__func__
    if getattr(original_func, _PATCHED_MARK, False):
        return

    def get_attributes(cls) -> list[str]:
        return [name for name in original_func(cls) if "video" not in name]

    setattr(get_attributes, _PATCHED_MARK, True)
    ProcessorMixin.get_attributes = classmethod(get_attributes)


def processor_class_for(folder: str):
    """The processor class to load a local model folder with in place of the one it names, or None (AutoProcessor):
    `Idefics3Processor` for a `SmolVLMProcessor` folder where torchvision or num2words is missing (module docstring)."""
    import importlib.util
    import json
    from pathlib import Path

    from transformers.utils import is_torchvision_available

    config = Path(folder, "processor_config.json")
    try:
        named = json.loads(config.read_text()).get("processor_class") if config.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None  # the loader's own checks name a damaged file
    if named == "SmolVLMProcessor" and not (is_torchvision_available() and importlib.util.find_spec("num2words")):
        from transformers import Idefics3Processor

        return Idefics3Processor
    return None
