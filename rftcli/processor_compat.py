"""Let Qwen-VL processors build, save and load on machines without torchvision.

Qwen2.5-VL's processor declares a video processor, and transformers only provides video processors
when torchvision imports. Where it doesn't (CPU machines whose only torchvision wheel is a CUDA build
that fails to import), building or loading the processor fails on the video processor
(`VIDEO_PROCESSOR_MAPPING ... _extra_content`, then a missing `video_preprocessor_config.json`).
rftcli only feeds images, so on such machines we tell `ProcessorMixin` that processors have no
"video" attributes. Where torchvision is available this is a no-op.
"""

from __future__ import annotations

_PATCHED_MARK = "_rftcli_drops_video_attributes"


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
