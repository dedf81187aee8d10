"""Drawing helpers shared by the synthetic tasks: PNG encoding and seven-segment digits.

Digits are drawn as seven-segment glyphs from rectangles, not with a font, so images are identical on
every machine and Pillow version (Pillow's default font changed between releases).
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

# Segments of a seven-segment digit: a top, b top right, c bottom right, d bottom, e bottom left,
# f top left, g middle.
_SEGMENTS = {
    "0": "abcdef", "1": "bc", "2": "abged", "3": "abgcd", "4": "fgbc",
    "5": "afgcd", "6": "afgedc", "7": "abc", "8": "abcdefg", "9": "abcdfg",
}


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def glyph_width(height: int) -> int:
    return max(5, int(height * 0.55))


def text_width(text: str, height: int) -> int:
    gap = max(2, height // 4)
    return len(text) * glyph_width(height) + (len(text) - 1) * gap


def draw_glyph(draw: ImageDraw.ImageDraw, char: str, x: int, y: int, height: int, color) -> None:
    """One digit or operator (+, -, *, =) with its top-left corner at (x, y)."""
    w, t = glyph_width(height), max(2, height // 9)
    mid = y + height // 2
    if char in _SEGMENTS:
        boxes = {
            "a": (x, y, x + w - 1, y + t - 1),
            "b": (x + w - t, y, x + w - 1, mid),
            "c": (x + w - t, mid, x + w - 1, y + height - 1),
            "d": (x, y + height - t, x + w - 1, y + height - 1),
            "e": (x, mid, x + t - 1, y + height - 1),
            "f": (x, y, x + t - 1, mid),
            "g": (x, mid - t // 2, x + w - 1, mid - t // 2 + t - 1),
        }
        for seg in _SEGMENTS[char]:
            draw.rectangle(boxes[seg], fill=color)
    elif char == "+":
        draw.rectangle((x, mid - t // 2, x + w - 1, mid - t // 2 + t - 1), fill=color)
        cx = x + w // 2
        draw.rectangle((cx - t // 2, mid - w // 2, cx - t // 2 + t - 1, mid + w // 2), fill=color)
    elif char == "-":
        draw.rectangle((x, mid - t // 2, x + w - 1, mid - t // 2 + t - 1), fill=color)
    elif char == "*":  # drawn as a multiplication cross
        half = w // 2
        draw.line((x, mid - half, x + w - 1, mid + half), fill=color, width=t)
        draw.line((x, mid + half, x + w - 1, mid - half), fill=color, width=t)
    elif char == "=":
        draw.rectangle((x, mid - 2 * t, x + w - 1, mid - t - 1), fill=color)
        draw.rectangle((x, mid + t, x + w - 1, mid + 2 * t - 1), fill=color)
    elif char != " ":
        raise ValueError(f"cannot draw {char!r}")


def draw_text(draw: ImageDraw.ImageDraw, text: str, x: int, y: int, height: int, color) -> None:
    gap = max(2, height // 4)
    for char in text:
        draw_glyph(draw, char, x, y, height, color)
        x += glyph_width(height) + gap
