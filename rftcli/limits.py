"""Limits that protect the machine: a prompt budget and an image budget, applied by every stage that
tokenizes prompts (rollout, eval, sft-coldstart, train-grpo) before it loads any weights.

Prompt budget. Each prompt the stage will use, text (system + prompt, chat-templated) plus the tokens its
images expand to, must fit in `max_prompt_length` tokens (default 4096), capped at the model's context
length (`max_position_embeddings` of its config.json; an adapter: its base's). One rule: a prompt over the
budget is refused, naming the file, the row and the column, before any weights load; nothing is written.
Memory stays bounded whatever a row holds: a prompt is first measured in characters, and one longer than
the budget times the longest token of the vocabulary cannot fit, so it is refused without being tokenized
(a 5 MB prompt costs its 5 MB, not a tensor of a million tokens); only prompts that may fit are tokenized,
one at a time. The images' token counts come from their stored sizes (headers only, no pixels decoded).

Image budget. The processor's pixel limits come from the stage's settings: `max_pixels` (default: the
processor's own, but never above 1,003,520 = 1280 x 28 x 28, at most 1280 image tokens per image for
Qwen2-VL-family models, which suits consumer GPUs) and `min_pixels` (default: the processor's own).
Images above `max_pixels` are shrunk in the rows the stage uses before anything else sees them (once per
distinct image; Lanczos, aspect ratio kept, see `rftcli.images`), so neither the processor nor TRL's
collator turns an 81-megapixel image into a gigabyte of floats; the stage's summary says how many distinct
images were shrunk. A table made by prepare-data with `--max-pixels` at or under the budget is left as it is. The
settings are set on the checkpoint's processor too, so a trained checkpoint saves the limits it was
trained with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_MAX_PROMPT_LENGTH = 4096
"""Prompt budget in tokens (text and image tokens together) when --max-prompt-length is not given."""

DEFAULT_MAX_PIXELS = 1280 * 28 * 28
"""Most pixels per image when --max-pixels is not given (and the processor allows more)."""


def check_limits(max_prompt_length: int, max_pixels: int | None, min_pixels: int | None) -> None:
    """The range checks a stage Config makes on its three limit settings."""
    if max_prompt_length < 1:
        raise ValueError(f"max_prompt_length must be at least 1, got {max_prompt_length}")
    for name, value in (("max_pixels", max_pixels), ("min_pixels", min_pixels)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1 (or unset), got {value}")
    if max_pixels is not None and min_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")


def context_length(spec: str, base: str | None = None, trust_remote_code: bool = False) -> int | None:
    """The longest sequence a model argument takes: `max_position_embeddings` of its (text) config, read
    without weights; an adapter's is its base's. None when the config does not say."""
    from transformers import AutoConfig

    from rftcli.loading import adapter_base, is_adapter, resolve

    path = resolve(spec)
    while is_adapter(path):
        path = resolve(adapter_base(path, base))
        base = None
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):  # no config.json here: loading the model names the problem
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    length = getattr(text, "max_position_embeddings", None) or getattr(config, "max_position_embeddings", None)
    return int(length) if isinstance(length, int) and length > 0 else None


def _pixel_size(image_processor: Any) -> tuple[Any, int | None, int | None]:
    """(size setting, its max pixels, its min pixels) of a Qwen2-VL-style image processor."""
    size = getattr(image_processor, "size", None)
    get = size.get if isinstance(size, Mapping) else lambda key: getattr(size, key, None)
    if size is None:
        return None, getattr(image_processor, "max_pixels", None), getattr(image_processor, "min_pixels", None)
    return size, get("longest_edge") or get("max_pixels"), get("shortest_edge") or get("min_pixels")


def apply_image_budget(processor: Any, max_pixels: int | None, min_pixels: int | None) -> int:
    """Set the processor's pixel limits from the settings (see the module docstring); returns the max pixels
    images are shrunk to. A processor without pixel limits (not Qwen2-VL-style) is left alone."""
    import copy

    image_processor = getattr(processor, "image_processor", None)
    size, own_max, own_min = _pixel_size(image_processor)
    limit = max_pixels if max_pixels is not None else min(DEFAULT_MAX_PIXELS, own_max or DEFAULT_MAX_PIXELS)
    if own_max is None:
        return limit
    low = min_pixels if min_pixels is not None else min(own_min or 0, limit) or None
    if low is not None and low > limit:
        raise ValueError(f"--min-pixels {low} is above the pixel budget of {limit} (--max-pixels); lower it or raise "
                         "--max-pixels")
    if size is not None and isinstance(size, Mapping):
        new = {**size, "longest_edge": limit}
        if low is not None:
            new["shortest_edge"] = low
        image_processor.size = new
    elif size is not None:
        new = copy.copy(size)
        new.longest_edge = limit
        if low is not None:
            new.shortest_edge = low
        image_processor.size = new
    for name, value in (("max_pixels", limit), ("min_pixels", low)):
        if value is not None and isinstance(getattr(image_processor, name, None), int):
            setattr(image_processor, name, value)
    return limit


class ImageShrinker:
    """Shrinks images over `max_pixels` (read from the header first: images within it are not decoded), each
    distinct image once; `shrunk` counts distinct images (a rollouts table repeats a prompt's in every sample)."""

    def __init__(self, max_pixels: int):
        from rftcli.images import ImageProcessor

        self.max_pixels = max_pixels
        self.processor = ImageProcessor(max_pixels=max_pixels)
        self._seen: set[int] = set()

    @property
    def shrunk(self) -> int:
        return len(self._seen)

    def over(self, data: bytes | None) -> bool:
        import io

        from PIL import Image

        from rftcli.images import _own_bomb_check

        if not data:
            return False
        with _own_bomb_check(), Image.open(io.BytesIO(data)) as img:
            width, height = img.size
        return width * height > self.max_pixels

    def images(self, items: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
        """A row's `images` with every image over the budget shrunk; the same list object when none was."""
        if not items or not any(self.over((item or {}).get("bytes")) for item in items):
            return items
        out = []
        for item in items:
            data = (item or {}).get("bytes")
            if self.over(data):
                item = {**item, "bytes": self.processor.process(data).bytes}
                self._seen.add(hash(data))
            out.append(item)
        return out

    def table(self, table):
        """`table` with its `images` column's images over the budget shrunk (the same table when none was)."""
        import pyarrow as pa

        column = table.column("images")
        rows = column.to_pylist()
        changed = False
        for i, items in enumerate(rows):
            new = self.images(items)
            if new is not items:
                rows[i], changed = new, True
        if not changed:
            return table
        index = table.column_names.index("images")
        return table.set_column(index, table.schema.field(index), pa.array(rows, column.type))


def prompt_images_key(row: Mapping[str, Any]) -> tuple[int, ...]:
    """A cheap key of a row's image contents (Python's cached hash of the bytes)."""
    return tuple(hash((item or {}).get("bytes")) for item in row.get("images") or [])


def row_positions(path: Path) -> dict[str, int]:
    """Each id of a table's `id` column with the first row it is in, for messages that name a row."""
    import pyarrow.parquet as pq

    positions: dict[str, int] = {}
    for i, row_id in enumerate(pq.read_table(path, columns=["id"]).column("id").to_pylist()):
        positions.setdefault(row_id, i)
    return positions


class PromptBudget:
    """One model's prompt budget and pixel limits, from its processor and config (no weights loaded)."""

    def __init__(self, spec: str, *, max_prompt_length: int, max_pixels: int | None, min_pixels: int | None,
                 base: str | None = None, trust_remote_code: bool = False, allow_pickle: bool = False):
        from rftcli.loading import _quiet_transformers, check_model, load_processor

        _quiet_transformers()  # a built-in model is saved on first use: no progress bar
        # The checks loading makes first (damaged settings files, missing weights), so they are named the same way.
        check_model(spec, base=base, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        self.processor = load_processor(spec, trust_remote_code, base)
        self.max_pixels = apply_image_budget(self.processor, max_pixels, min_pixels)
        self.context = context_length(spec, base, trust_remote_code)
        self.asked = max_prompt_length
        self.tokens = min(max_prompt_length, self.context) if self.context else max_prompt_length
        vocab = self.processor.tokenizer.get_vocab()
        # No token covers more characters than its longest vocabulary entry (byte-level BPE: bytes >= chars).
        self.chars_per_token = max((len(t) for t in vocab), default=1) or 1

    def _what(self) -> str:
        if self.context is not None and self.asked > self.context:
            return (f"the prompt budget of {self.tokens:,} tokens (--max-prompt-length {self.asked:,}, capped at "
                    "the model's context length)")
        return f"the prompt budget of {self.tokens:,} tokens (--max-prompt-length)"

    def check(self, path: Path, rows: Iterable[Mapping[str, Any]], positions: Mapping[str, int]) -> None:
        """Raise a ValueError naming file, row and column for the first row whose prompt is over budget."""
        from rftcli.generation import prompt_length

        seen: set[Any] = set()
        for row in rows:
            system, prompt = row.get("system") or "", row.get("prompt") or ""
            key = (row.get("id"), hash(system), hash(prompt), prompt_images_key(row))
            if key in seen:  # a rollouts/scores table repeats its prompt in every sample of a group
                continue
            seen.add(key)
            column = "system" if len(system) > len(prompt) else "prompt"
            where = f"{path}: row {positions.get(row.get('id'), '?')}, column {column!r} (id {row.get('id')!r})"
            chars = len(system) + len(prompt)
            if chars > self.tokens * self.chars_per_token:
                raise ValueError(f"{where}: the prompt is {chars:,} characters, which cannot fit in {self._what()}; "
                                 "shorten it, leave the row out, or raise --max-prompt-length")
            tokens = prompt_length(self.processor, row)
            if tokens > self.tokens:
                images = len(row.get("images") or [])
                with_images = f" with its {images} image{'s' if images != 1 else ''}" if images else ""
                raise ValueError(f"{where}: the prompt is {tokens:,} tokens{with_images}, over {self._what()}; "
                                 "shorten it, leave the row out, or raise --max-prompt-length")
