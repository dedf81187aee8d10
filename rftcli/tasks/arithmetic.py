"""Arithmetic on drawn digits: the image shows an expression such as "7 + 5"; the answer is its value.

Digits and operators are drawn as seven-segment glyphs (no font: identical images on every machine).
Knobs: `max_value` (operands are 0..max_value), `operands` (2 or more, evaluated left to right with
the usual precedence of * over + and -), `ops` (a string of the operators to use, from "+-*"),
`negative` (allow a negative result; default no: subtraction never goes below zero), `image_size`
(square, in pixels) and `digit_height`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

from PIL import Image, ImageDraw

from rftcli.formats.prompt import apply_instruction
from rftcli.instructions import INSTRUCTION
from rftcli.tasks.drawing import draw_text, png, text_width

QUESTION = "What is the value of the expression in the image?"
_SHOWN = {"+": "+", "-": "-", "*": "×"}


def _value(terms: list[int], ops: list[str]) -> int:
    # * first, then + and - left to right.
    values, pending = [terms[0]], []
    for op, t in zip(ops, terms[1:], strict=True):
        if op == "*":
            values[-1] *= t
        else:
            pending.append(op)
            values.append(t)
    total = values[0]
    for op, v in zip(pending, values[1:], strict=True):
        total = total + v if op == "+" else total - v
    return total


def _expression(rng: random.Random, max_value: int, operands: int, ops: str, negative: bool):
    for _ in range(1000):
        terms = [rng.randint(0, max_value) for _ in range(operands)]
        chosen = [rng.choice(ops) for _ in range(operands - 1)]
        value = _value(terms, chosen)
        if negative or value >= 0:
            return terms, chosen, value
    raise ValueError("could not draw an expression with a non-negative value; allow negative=1")


def generate(n: int, seed: int = 0, *, max_value: int = 9, operands: int = 2, ops: str = "+-",
             negative: int = 0, image_size: int = 112, digit_height: int = 18,
             instruction: str | None = None) -> Iterator[dict]:
    """Yield `n` arithmetic rows; the same (n, seed, knobs) always gives the same rows."""
    ops = str(ops)
    if not ops or set(ops) - set("+-*"):
        raise ValueError(f"ops must be made of + - *, got {ops!r}")
    if operands < 2 or max_value < 1:
        raise ValueError("operands must be at least 2 and max_value at least 1")
    widest = " ".join([str(max_value)] + ["+", str(max_value)] * (operands - 1))
    if text_width(widest, digit_height) > image_size - 4 or digit_height > image_size - 4:
        raise ValueError(f"the expression does not fit a {image_size} px image; raise image_size or lower "
                         "digit_height, max_value or operands")
    rng = random.Random(seed)
    prompt = apply_instruction(QUESTION, INSTRUCTION if instruction is None else instruction)
    for i in range(n):
        terms, chosen, value = _expression(rng, max_value, operands, ops, bool(negative))
        drawn = " ".join([str(terms[0])] + [f"{op} {t}" for op, t in zip(chosen, terms[1:], strict=True)])
        img = Image.new("RGB", (image_size, image_size), (255, 255, 255))
        width = text_width(drawn, digit_height)
        x = rng.randint(2, image_size - 2 - width)
        y = rng.randint(2, image_size - 2 - digit_height)
        draw_text(ImageDraw.Draw(img), drawn, x, y, digit_height, (0, 0, 0))
        shown = " ".join([str(terms[0])] + [f"{_SHOWN[op]} {t}" for op, t in zip(chosen, terms[1:], strict=True)])
        reasoning = f"The image shows {shown}. {shown} = {value}."
        yield {
            "id": f"arithmetic-s{seed}-{i:07d}",
            "task": "arithmetic",
            "system": None,
            "prompt": prompt,
            "images": [{"bytes": png(img), "path": None}],
            "answer": str(value),
            "answer_type": "number",
            "choices": None,
            "reasoning": reasoning,
            "response": f"<think>{reasoning}</think>\n<answer>{value}</answer>",
            "metadata": json.dumps({"expression": drawn, "max_value": max_value, "operands": operands,
                                    "seed": seed}),
        }
