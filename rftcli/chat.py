"""From a dataset row to what a model sees: conversational messages and decoded images.

The layout is TRL's conversational format with image placeholders, which `apply_chat_template`,
`SFTTrainer` and `GRPOTrainer` all accept:
    [{"role": "system", "content": [{"type": "text", "text": ...}]},
     {"role": "user", "content": [{"type": "image"}, ..., {"type": "text", "text": prompt}]}]
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from PIL import Image


def prompt_messages(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """System (if any) and user turn of a dataset row; one image placeholder per image."""
    messages = []
    if row.get("system"):
        messages.append({"role": "system", "content": [{"type": "text", "text": row["system"]}]})
    content = [{"type": "image"} for _ in row.get("images") or []]
    content.append({"type": "text", "text": row["prompt"]})
    messages.append({"role": "user", "content": content})
    return messages


def response_text(row: Mapping[str, Any]) -> str | None:
    """The SFT target of a row: `response`, else `reasoning` + answer in the think/answer format."""
    if row.get("response"):
        return row["response"]
    if row.get("reasoning"):
        return f"<think>{row['reasoning']}</think>\n<answer>{row['answer']}</answer>"
    return None


def decode_images(row: Mapping[str, Any]) -> list[Image.Image]:
    """The row's images as RGB PIL images (bytes are decoded; a path is opened if bytes are absent)."""
    out = []
    for j, item in enumerate(row.get("images") or []):
        data = item.get("bytes")
        try:
            img = Image.open(io.BytesIO(data)) if data else Image.open(item["path"])
            out.append(img.convert("RGB"))
        except Exception as err:  # a header that opened over a damaged payload; PIL raises many types
            raise ValueError(f"prompt {row.get('id')!r}, column 'images' (image {j}): the image cannot be "
                             f"decoded ({type(err).__name__}: {str(err)[:120]})") from None
    return out
