"""Counting: how many red squares are in the image?

Squares are drawn on a grid of 14 px cells, aligned to the vision patches, because a tiny model only
learns the task when objects line up with its patches. Blue squares of the same size are distractors.
Knobs: `image_size` (a multiple of 14), `max_count`, `distractors` (most blue squares per image), and
`weak_teacher`: the probability that a row's reference reasoning and response (the SFT targets) undercount
by one when there are 3 or more red squares, as cold-start traces from a weaker model would. `answer`
always holds the true count, so rewards and evaluation stay exact; SFT imitates the teacher's mistakes
and GRPO, rewarded by the true answer, has something to correct.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator

from PIL import Image, ImageDraw

from rftcli.instructions import INSTRUCTION

CELL = 14
RED = (220, 30, 30)
BLUE = (30, 60, 220)
QUESTION = "How many red squares are in the image?"


def _image(rng: random.Random, image_size: int, count: int, distractors: int) -> bytes:
    cells = [(x, y) for x in range(image_size // CELL) for y in range(image_size // CELL)]
    chosen = rng.sample(cells, count + distractors)
    img = Image.new("RGB", (image_size, image_size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, (cx, cy) in enumerate(chosen):
        color = RED if i < count else BLUE
        # 2 px margin so neighbouring squares stay separate.
        draw.rectangle([cx * CELL + 2, cy * CELL + 2, cx * CELL + CELL - 3, cy * CELL + CELL - 3], fill=color)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def generate(n: int, seed: int = 0, *, image_size: int = 56, max_count: int = 4, distractors: int = 2,
             weak_teacher: float = 0.0, instruction: str | None = None) -> Iterator[dict]:
    """Yield `n` counting rows; the same (n, seed, knobs) always gives the same rows."""
    if image_size % CELL or image_size < 2 * CELL:
        raise ValueError(f"image_size must be a multiple of {CELL} and at least {2 * CELL}, got {image_size}")
    if max_count + distractors > (image_size // CELL) ** 2:
        raise ValueError("max_count + distractors exceeds the cells of the image")
    if not 0 <= weak_teacher <= 1:
        raise ValueError(f"weak_teacher must be a probability, got {weak_teacher}")
    rng = random.Random(seed)
    # A separate stream, so the images and answers do not depend on weak_teacher.
    teacher_rng = random.Random(f"weak-teacher-{seed}")
    prompt = f"{QUESTION} {instruction if instruction is not None else INSTRUCTION}"
    for i in range(n):
        count = rng.randint(0, max_count)
        blue = rng.randint(0, distractors)
        said = count - 1 if count >= 3 and teacher_rng.random() < weak_teacher else count
        reasoning = f"I see {said} red squares and {blue} blue squares. There are {said} red squares."
        yield {
            "id": f"counting-s{seed}-{i:07d}",
            "task": "counting",
            "system": None,
            "prompt": prompt,
            "images": [{"bytes": _image(rng, image_size, count, blue), "path": None}],
            "answer": str(count),
            "answer_type": "number",
            "choices": None,
            "reasoning": reasoning,
            "response": f"<think>{reasoning}</think>\n<answer>{said}</answer>",
            "metadata": json.dumps({"red": count, "blue": blue, "image_size": image_size, "seed": seed,
                                    **({"teacher_said": said} if weak_teacher else {})}),
        }
