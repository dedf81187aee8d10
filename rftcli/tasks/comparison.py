"""Comparison: are there more red or more blue squares?

The same 14 px grid as `counting` (objects aligned to the vision patches). The answer is a choice,
A (red) or B (blue); the counts never tie. Knobs: `image_size` (a multiple of 14), `max_count` (most
squares of one colour), `min_gap` (smallest difference between the counts: 1 is hardest).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

from PIL import Image, ImageDraw

from rftcli.formats.prompt import apply_instruction, render_choices
from rftcli.instructions import INSTRUCTION
from rftcli.tasks.counting import BLUE, CELL, RED
from rftcli.tasks.drawing import png

QUESTION = "Are there more red squares or more blue squares in the image?"
CHOICES = ["red", "blue"]


def _image(rng: random.Random, image_size: int, red: int, blue: int) -> bytes:
    cells = [(x, y) for x in range(image_size // CELL) for y in range(image_size // CELL)]
    img = Image.new("RGB", (image_size, image_size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, (cx, cy) in enumerate(rng.sample(cells, red + blue)):
        draw.rectangle([cx * CELL + 2, cy * CELL + 2, cx * CELL + CELL - 3, cy * CELL + CELL - 3],
                       fill=RED if i < red else BLUE)
    return png(img)


def generate(n: int, seed: int = 0, *, image_size: int = 56, max_count: int = 6, min_gap: int = 1,
             instruction: str | None = None) -> Iterator[dict]:
    """Yield `n` comparison rows; the same (n, seed, knobs) always gives the same rows."""
    if image_size % CELL or image_size < 2 * CELL:
        raise ValueError(f"image_size must be a multiple of {CELL} and at least {2 * CELL}, got {image_size}")
    if not 1 <= min_gap <= max_count:
        raise ValueError(f"min_gap must be between 1 and max_count ({max_count}), got {min_gap}")
    if 2 * max_count > (image_size // CELL) ** 2:
        raise ValueError("2 * max_count exceeds the cells of the image")
    rng = random.Random(seed)
    prompt = apply_instruction(render_choices(QUESTION, CHOICES), INSTRUCTION if instruction is None else instruction)
    for i in range(n):
        more = rng.randint(min_gap, max_count)
        less = rng.randint(0, more - min_gap)
        red, blue = (more, less) if rng.random() < 0.5 else (less, more)
        letter, word = ("A", "red") if red > blue else ("B", "blue")
        reasoning = f"I count {red} red squares and {blue} blue squares, so there are more {word} squares."
        yield {
            "id": f"comparison-s{seed}-{i:07d}",
            "task": "comparison",
            "system": None,
            "prompt": prompt,
            "images": [{"bytes": _image(rng, image_size, red, blue), "path": None}],
            "answer": letter,
            "answer_type": "choice",
            "choices": list(CHOICES),
            "reasoning": reasoning,
            "response": f"<think>{reasoning}</think>\n<answer>{letter}</answer>",
            "metadata": json.dumps({"red": red, "blue": blue, "image_size": image_size, "seed": seed}),
        }
