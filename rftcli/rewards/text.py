"""Getting the answer text out of a completion: the extraction policy every answer reward follows.

A completion is a plain string or TRL's conversational form, a list of messages whose `content` is a
string or a list of parts (`{"type": "text", "text": ...}`; image parts are skipped).

The policy:
1. Everything inside `<think>` is ignored by every step (an answer written only while thinking does not
   count). An unclosed `<think>` (a truncated completion) hides everything after it; a `</think>` with
   no opening tag (chat templates that put `<think>` in the prompt) hides everything before it.
2. The answer slot is the `<answer>...</answer>` block, else `\\boxed{...}` (balanced braces). Training
   rewards pay only for an answer in the slot (`find_answer` mode "boxed", the default).
3. More than one distinct answer in the slot is no answer: `<answer>3</answer> ... <answer>4</answer>`
   and `\\boxed{3} ... \\boxed{4}` give None (a repeat of the same answer is fine). An `<answer>` block
   that is present but empty gives None and does not fall back.
4. A number is a whole token: never digits inside a word, an identifier, a file name or a URL
   (`abc2def`, `CLEVR_val_000003`, `img_3.png`, `http://x/3` hold no number); a number may carry a unit
   glued to it (`3cm`, `90°`, `50%`).
5. The lenient fallback is opt-in (mode "any", the `*_lenient` rewards): without a slot, the last
   "answer is B" / "(B)" for choice questions, every box for boxes, else the last whole-token number.
6. The direct-answer rule (mode "whole", for prompts that ask for a bare answer, as `eval --prompt direct`
   does): without a slot, the whole visible completion is the answer and must hold exactly one. For numbers
   every whole-token number in it must be the same value ("3", "There are 3." pay; "3 or 4", "2 then 3"
   do not; digits only inside words are no number); for choices, boxes, text and math the whole text goes
   to the comparison, which refuses two options ("B or C"), two boxes, or extra words.

`find_answer(text, mode, kind)` (`EXTRACT_MODES`):
    tag     only the `<answer>` block (`accuracy_strict`)
    boxed   the answer slot: `<answer>`, else `\\boxed{}` (`accuracy`, `count`, `iou`)
    any     the slot, else the lenient fallback (`accuracy_lenient`, `count_lenient`, `iou_lenient`)
    whole   the slot, else the whole visible completion holding one answer (rule 6; `eval --prompt direct`)
`extract_answer(text, fallback)` is mode "any" (fallback True) or "tag".

Examples:
    >>> extract_answer("<think>maybe 3</think><answer> 4 </answer>")
    '4'
    >>> extract_answer("<answer>1</answer> no, <answer>2</answer>") is None
    True
    >>> find_answer("so \\\\boxed{\\\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    >>> find_answer("I count 7 squares, so 8 in total.") is None
    True
    >>> find_answer("I count 7 squares, so 8 in total.", "any")
    '8'
    >>> find_answer("see CLEVR_val_000003.png", "any") is None
    True
    >>> extract_answer("<think>it is 5</think>no idea") is None
    True
    >>> find_answer("So the answer is (C).", "any", kind="choice")
    'C'
    >>> find_answer("There are 3.", "whole", kind="number"), find_answer("3 or 4", "whole", kind="number")
    ('3', None)
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
    'hi'
"""

from __future__ import annotations

import re
from typing import Any

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# "the answer is B", "Answer: (C)", "**Answer:** D" - the word in any case, the letter a capital. Not
# "option B", which models also write about options they reject.
_CHOICE_PHRASE = re.compile(r"(?i:answer)\s*(?i:is)?\s*:?\s*\**\s*\(?([A-J])\)?(?![A-Za-z0-9])")
_CHOICE_PAREN = re.compile(r"\(([A-J])\)")
EXTRACT_MODES = ("tag", "boxed", "any", "whole")
STRICT = "boxed"
"""The extraction mode of the training rewards: the answer slot only."""
LENIENT = "any"
"""The opt-in mode: the answer slot, else the last choice phrase / box / whole-token number."""
WHOLE = "whole"
"""The direct-answer mode: the answer slot, else the whole visible completion when it holds one answer."""
# A number token: optional sign, thousands-separated or plain digits, decimals, a fraction, then at most a
# percent sign or a short unit glued to it ("3cm", "90°"). Matched against a whole token only.
_NUMBER_TOKEN = re.compile(
    r"([-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|\.\d+))"
    r"(%|°|(?i:cm|mm|km|m|kg|g|mg|ml|l|s|ms|h|min|ft|in|px|deg))?")
_TOKEN_EDGE = "()[]{}<>,.;:!?\"'*$`"


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, a message dict, or a list of messages (contents joined)."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        if not messages:  # a list of plain strings or parts
            return "".join(_content_text(m) for m in completion)
        # Prefer the assistant's own turns; tool results are not the model's answer.
        own = [m for m in messages if m.get("role", "assistant") == "assistant"] or messages
        return "\n".join(_content_text(m.get("content")) for m in own)
    return str(completion)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):  # one part
        return (content.get("text") or "") if content.get("type", "text") == "text" else ""
    if isinstance(content, (list, tuple)):
        return "".join(_content_text(part) for part in content)
    return str(content)


def strip_think(text: str) -> str:
    """`text` without its reasoning: closed `<think>` blocks, text before an orphan `</think>`, and
    everything after an unclosed `<think>`."""
    if "think>" not in text:  # fast path: most of the cost is here when there is nothing to remove
        return text
    text = _THINK_BLOCK.sub(" ", text)
    close = text.rfind("</think>")
    if close != -1:
        text = text[close + len("</think>"):]
    open_ = text.find("<think>")
    if open_ != -1:
        text = text[:open_]
    return text


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` with balanced braces, or None (also when unbalanced)."""
    start = text.rfind("\\boxed{")
    while start != -1:
        i, depth = start + len("\\boxed{"), 1
        while i < len(text):
            ch = text[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start + len("\\boxed{"):i].strip()
            i += 1
        start = text.rfind("\\boxed{", 0, start)  # unbalanced: try an earlier one
    return None


def number_tokens(text: str) -> list[str]:
    """The whole-token numbers in `text`, in order, as written without a glued unit ("1,000", "-2.5",
    "1/2", "50%"); a token with other letters or digits in it (`abc2def`, `img_3.png`) holds none."""
    out = []
    for raw in text.split():
        token = raw.strip(_TOKEN_EDGE)
        if token and token[0] in "+-.0123456789" and (m := _NUMBER_TOKEN.fullmatch(token)):
            out.append(m.group(1) + ("%" if m.group(2) == "%" else ""))
    return out


def last_number(text: str) -> str | None:
    """The last whole-token number in `text` (see `number_tokens`), or None."""
    if not any(c.isdigit() for c in text):
        return None
    found = number_tokens(text)
    return found[-1] if found else None


def all_boxed(text: str) -> list[str]:
    """The contents of every `\\boxed{...}` with balanced braces, in order."""
    out, start = [], text.find("\\boxed{")
    while start != -1:
        i, depth = start + len("\\boxed{"), 1
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[start + len("\\boxed{"):i - 1].strip())
        start = text.find("\\boxed{", i if depth == 0 else start + 1)  # not inside the box just read
    return out


def _one(candidates: list[str]) -> str | None:
    """The answer when every candidate says the same thing (spacing aside), else None."""
    if not candidates or not candidates[-1]:
        return None
    return candidates[-1] if len({" ".join(c.split()) for c in candidates}) == 1 else None


def extract_answer(text: str, fallback: bool = True) -> str | None:
    """The model's final answer in `text` (see the module docstring), stripped; None when there is none.
    `fallback=False` is mode "tag" of `find_answer`, `True` its mode "any" for a number."""
    return find_answer(text, "any" if fallback else "tag")


def last_choice(text: str) -> str | None:
    """The option letter of the last "answer is B"-style phrase, else of the last "(B)"; or None."""
    for pattern in (_CHOICE_PHRASE, _CHOICE_PAREN):
        matches = pattern.findall(text)
        if matches:
            return matches[-1]
    return None


def find_answer(text: str, mode: str = STRICT, kind: str | None = None) -> str | None:
    """The final answer in `text` by extraction `mode` (see the module docstring); `kind` is the
    answer type, which picks the last-resort fallback of mode "any"."""
    if mode not in EXTRACT_MODES:
        raise ValueError(f"unknown extraction mode {mode!r}; expected one of {', '.join(EXTRACT_MODES)}")
    visible = strip_think(text)
    if "<answer>" in visible:
        blocks = _ANSWER_BLOCK.findall(visible)
        if blocks:
            return _one([b.strip() for b in blocks])
    if mode == "tag":
        return None
    if "\\boxed{" in visible:
        boxed = all_boxed(visible)
        if boxed or mode == "boxed":
            return _one(boxed)
    if mode == "boxed":
        return None
    if mode == WHOLE:
        return whole_answer(visible, kind)
    if kind == "choice":
        return last_choice(visible) or last_number(visible)
    if kind == "box":
        return visible.strip() or None  # the box parser finds every box; more than one is a hedge
    return last_number(visible)


def _number_value(token: str) -> object:
    """A `number_tokens` token by value, so "3" and "3.0" agree: (value, percent), or the token itself."""
    body = token.removesuffix("%").replace(",", "")
    num, _, den = body.partition("/")
    try:
        value = float(num) / (float(den) if den else 1.0)
    except (ValueError, ZeroDivisionError):
        return token
    return (float(f"{value:.9g}"), token.endswith("%"))


def whole_answer(visible: str, kind: str | None = None) -> str | None:
    """The answer of a completion written without an answer slot (rule 6 of the module docstring): for
    numbers (`kind` number or unknown) the one value every whole-token number states, else None; for the
    other kinds the whole text, for the comparison to read as one answer or refuse."""
    text = visible.strip()
    if not text:
        return None
    if kind in (None, "", "number"):
        tokens = number_tokens(text)
        if not tokens:  # number words ("three") are read by the comparison; digits inside words are no number
            return None if any(c.isdigit() for c in text) else text
        return tokens[-1] if len({_number_value(t) for t in tokens}) == 1 else None
    return text
