"""Prompt building and answer normalisation, the same for every input layout.

Prompt, in this order:
    1. `<image>` placeholders (LLaVA, hiyouga/geometry3k) are removed: images go before the text (the
       chat template places them). Numbered references (MMMU's `<image 1>`, `<image 2>`) stay as written:
       they say which picture a sentence or an option means, and the images are stored in number order.
    2. Multiple choice: when the prompt does not already list every option, they are added on their own
       lines as "A. first", "B. second", ...
    3. The instruction: a named template (`--instruction think|answer|boxed|none`) or your own text.
       Text holding `{question}` is a template: the prompt is put in its place. Other text is appended,
       unless the prompt already contains it: after a space when the prompt is one sentence ending in
       . ? ! or :, else on a new line.
The system prompt (`--system think` or your own text) fills rows that bring none.

Answers: `answer` holds the normalised ground truth that rewards compare against; when normalising
changed it, the answer as the source wrote it is kept in metadata as `raw_answer`. Per answer_type:
    number  thousands separators dropped, plain decimals in shortest form ("1,000.50" -> "1000.5");
            fractions, percentages and LaTeX numbers are kept as written; must read as one number
    choice  the option letter ("(b)", "B.", or the option's own text -> "B"); must name an option
    text    surrounding space trimmed, inner runs of space collapsed
    math    surrounding space and $ delimiters removed, a whole-answer \\boxed{} unwrapped
    box     "[x1, y1, x2, y2]" in pixels of the image as stored (see `convert_box`)
A missing answer_type is inferred as the accuracy reward infers it (choice when there are options,
number, box, a lone capital letter as choice, math, else text). An answer that is one whole \\boxed{}
(ViRL39K writes every answer so) is unwrapped first, for every type but box.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from rftcli.instructions import INSTRUCTION

INSTRUCTIONS = {
    "think": INSTRUCTION,
    "answer": "Give only the final answer inside <answer> </answer> tags.",
    "boxed": "Think step by step, then put the final answer in \\boxed{}.",
    "none": "",
}
"""Named instruction templates for --instruction."""

SYSTEMS = {
    "think": ("You are a careful assistant. Reason about the question first, then answer. Write the reasoning "
              "inside <think> </think> tags and the final answer inside <answer> </answer> tags."),
}
"""Named system prompts for --system."""

_IMAGE_TOKEN = re.compile(r"[ \t]*<image>[ \t]*\n?")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?")
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_BOXED = re.compile(r"\\boxed\{(.*)\}")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def resolve_instruction(value: str | None) -> str:
    """--instruction: a template name, your own text, '' for none; None means the default (think)."""
    if value is None:
        return INSTRUCTION
    return INSTRUCTIONS.get(value, value)


def resolve_system(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    return SYSTEMS.get(value, value)


def strip_image_tokens(text: str) -> str:
    return _IMAGE_TOKEN.sub(" ", text).strip() if "<image>" in text else text


def lists_choices(prompt: str, choices: Sequence[str]) -> bool:
    """Whether every option already appears labelled ("A. x", "(A) x", "A) x", "A: x") in the prompt."""
    return all(re.search(rf"\(?{_LETTERS[i]}[.):]\s*{re.escape(c.strip())}", prompt) for i, c in enumerate(choices))


def render_choices(prompt: str, choices: Sequence[str] | None) -> str:
    """The prompt with "A. ..." option lines added, unless it already lists every option labelled."""
    if not choices or lists_choices(prompt, choices):
        return prompt
    if len(choices) > len(_LETTERS):
        raise ValueError(f"{len(choices)} choices; at most {len(_LETTERS)} can be lettered")
    lines = "\n".join(f"{_LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{prompt.rstrip()}\n{lines}"


def apply_instruction(prompt: str, instruction: str) -> str:
    if not instruction:
        return prompt
    if "{question}" in instruction:
        return instruction.replace("{question}", prompt)
    if instruction in prompt:
        return prompt
    # A new line after a multi-line prompt or one that does not end a sentence (a referring expression).
    inline = "\n" not in prompt and prompt.rstrip().endswith((".", "?", "!", ":"))
    return f"{prompt.rstrip()}{' ' if inline else chr(10)}{instruction}"


def infer_answer_type(answer: str, choices: Sequence[str] | None) -> str:
    from rftcli.rewards.accuracy import infer_answer_type as infer

    return infer(answer, choices)


def _number(text: str) -> str:
    s = text.strip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if _DECIMAL.fullmatch(s):
        try:
            d = Decimal(s).normalize()
        except InvalidOperation:
            return s
        out = format(d, "f")
        return "0" if out in ("-0", "+0") else out.lstrip("+")
    from rftcli.rewards.numeric import parse_number

    if parse_number(s) is None:
        raise ValueError(f"{text!r} is not a number (answer_type number)")
    return s


def _choice(text: str, choices: Sequence[str] | None) -> str:
    from rftcli.rewards.accuracy import choice_letter

    letter = choice_letter(text, choices)
    if letter is None:
        raise ValueError(f"{text!r} names no option (answer_type choice wants a letter or an option's text)")
    if choices and _LETTERS.index(letter) >= len(choices):
        raise ValueError(f"option {letter} does not exist: there are {len(choices)} choices")
    return letter


def unbox(text: str) -> str:
    """The content of an answer that is one whole \\boxed{...} (its braces balanced); else the text."""
    s = text.strip()
    if not (s.startswith("\\boxed{") and s.endswith("}")):
        return text
    depth = 0
    for i, c in enumerate(s[len("\\boxed"):], len("\\boxed")):
        depth += {"{": 1, "}": -1}.get(c, 0)
        if depth == 0 and i != len(s) - 1:
            return text  # "\\boxed{a} + \\boxed{b}": not one box
    inner = s[len("\\boxed{"):-1].strip()
    return inner or text


def _math(text: str) -> str:
    s = text.strip()
    while len(s) > 1 and s.startswith("$") and s.endswith("$"):
        s = s[1:-1].strip()
    if m := _BOXED.fullmatch(s):
        s = m.group(1).strip()
    return s


def normalise_answer(answer: str, answer_type: str, choices: Sequence[str] | None) -> str:
    """The answer rewards compare against (box answers go through `convert_box` instead).
    Raises ValueError with the reason when the answer does not fit its type."""
    if answer_type == "number":
        return _number(answer)
    if answer_type == "choice":
        return _choice(answer, choices)
    if answer_type == "math":
        return _math(answer)
    return " ".join(answer.split())


# ---------------------------------------------------------------- boxes

def _fmt(v: float) -> str:
    r = round(v, 1)
    return str(int(r)) if r == int(r) else f"{r:.1f}"


def format_box(box: Sequence[float]) -> str:
    return "[" + ", ".join(_fmt(v) for v in box) + "]"


def convert_box(values: Sequence[float], fmt: str, units: str, original: tuple[int, int],
                stored: tuple[int, int]) -> tuple[list[float], dict]:
    """A source box to [x1, y1, x2, y2] in pixels of the stored image, and the record of the conversion.

    fmt: xyxy (corners) or xywh (top-left corner, width, height: COCO). units: pixel (of the original
    image), normalized (0-1 of its size), norm1000 (0-1000), or auto (normalized when every value <= 1,
    else pixel). Corners are put in order and clipped to the image."""
    if len(values) != 4:
        raise ValueError(f"a box needs 4 numbers, got {len(values)}")
    try:
        x, y, a, b = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"box {list(values)!r} is not 4 numbers") from None
    if units == "auto":
        units = "normalized" if max(abs(x), abs(y), abs(a), abs(b)) <= 1 else "pixel"
    w0, h0 = original
    scale = {"pixel": (1.0, 1.0), "normalized": (w0, h0), "norm1000": (w0 / 1000, h0 / 1000)}[units]
    x, a = x * scale[0], a * scale[0]
    y, b = y * scale[1], b * scale[1]
    if fmt == "xywh":
        a, b = x + a, y + b
    x1, x2 = sorted((x, a))
    y1, y2 = sorted((y, b))
    sx, sy = stored[0] / w0, stored[1] / h0
    box = [min(max(x1 * sx, 0.0), stored[0]), min(max(y1 * sy, 0.0), stored[1]),
           min(max(x2 * sx, 0.0), stored[0]), min(max(y2 * sy, 0.0), stored[1])]
    if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
        raise ValueError(f"box {list(values)!r} ({fmt}, {units}) is empty inside the {w0}x{h0} image")
    record = {"from": f"{fmt}, {units}", "to": "xyxy, pixels of the stored image", "original_size": [w0, h0],
              "image_size": list(stored)}
    return box, record
