"""Grounding: draw a target shape among distractors; the answer is its box.

One target (a colour and a shape, e.g. "the red circle") and `distractors` other shapes that differ
from it in colour, shape or both; none overlap. The answer is "[x1, y1, x2, y2]" in pixels of the image
(corners of the shape's bounding square, x2/y2 exclusive), answer_type box, the same convention
prepare-data gives RefCOCO. The prompt is the RefCOCO one: the grounding request, then the expression.
Knobs: `image_size`, `min_size` and `max_size` (side of the shapes, pixels), `distractors`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

from PIL import Image, ImageDraw

from rftcli.formats.prompt import apply_instruction
from rftcli.instructions import INSTRUCTION, grounding_prompt
from rftcli.tasks.drawing import png

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 160, 60), "yellow": (230, 200, 20)}
SHAPES = ("circle", "square", "triangle")


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color) -> None:
    x1, y1, x2, y2 = box
    if shape == "circle":
        draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=color)
    elif shape == "square":
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=color)
    else:
        draw.polygon([((x1 + x2 - 1) / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=color)


def _place(rng: random.Random, image_size: int, size: int, taken: list[tuple[int, int, int, int]]):
    for _ in range(200):
        x, y = rng.randint(0, image_size - size), rng.randint(0, image_size - size)
        box = (x, y, x + size, y + size)
        # 2 px apart, so boxes never touch
        if all(box[0] >= t[2] + 2 or box[2] + 2 <= t[0] or box[1] >= t[3] + 2 or box[3] + 2 <= t[1] for t in taken):
            return box
    raise ValueError("cannot place the shapes without overlap; lower distractors or max_size, or raise image_size")


def generate(n: int, seed: int = 0, *, image_size: int = 112, min_size: int = 12, max_size: int = 28,
             distractors: int = 3, instruction: str | None = None) -> Iterator[dict]:
    """Yield `n` grounding rows; the same (n, seed, knobs) always gives the same rows."""
    if not 4 <= min_size <= max_size <= image_size:
        raise ValueError("need 4 <= min_size <= max_size <= image_size")
    if distractors < 0:
        raise ValueError("distractors must be >= 0")
    rng = random.Random(seed)
    instruction = INSTRUCTION if instruction is None else instruction
    kinds = [(c, s) for c in COLORS for s in SHAPES]
    for i in range(n):
        color, shape = rng.choice(kinds)
        others = [k for k in kinds if k != (color, shape)]
        img = Image.new("RGB", (image_size, image_size), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        taken: list[tuple[int, int, int, int]] = []
        target = _place(rng, image_size, rng.randint(min_size, max_size), taken)
        taken.append(target)
        for _ in range(distractors):
            box = _place(rng, image_size, rng.randint(min_size, max_size), taken)
            taken.append(box)
            c, s = rng.choice(others)
            _draw(draw, s, box, COLORS[c])
        _draw(draw, shape, target, COLORS[color])
        answer = f"[{target[0]}, {target[1]}, {target[2]}, {target[3]}]"
        reasoning = (f"The {color} {shape} spans x from {target[0]} to {target[2]} and y from {target[1]} "
                     f"to {target[3]}.")
        yield {
            "id": f"grounding-s{seed}-{i:07d}",
            "task": "grounding",
            "system": None,
            "prompt": apply_instruction(grounding_prompt(f"the {color} {shape}"), instruction),
            "images": [{"bytes": png(img), "path": None}],
            "answer": answer,
            "answer_type": "box",
            "choices": None,
            "reasoning": reasoning,
            "response": f"<think>{reasoning}</think>\n<answer>{answer}</answer>",
            "metadata": json.dumps({"target": f"{color} {shape}", "distractors": distractors,
                                    "image_size": image_size, "seed": seed}),
        }
