"""Getting the answer text out of a completion.

A completion is a plain string or TRL's conversational form, a list of messages whose `content` is a
string or a list of parts (`{"type": "text", "text": ...}`; image parts are skipped).

`extract_answer` takes the content of the last `<answer>...</answer>`; without one it falls back to the
last `\\boxed{...}` (balanced braces), then to the last number. Everything inside `<think>` is ignored by
every step, the `<answer>` search included (an answer written only while thinking does not count). An
unclosed `<think>` (a truncated completion) hides everything after it; a `</think>` with no opening tag
(chat templates that put `<think>` in the prompt) hides everything before it.

An `<answer>` block that is present but empty gives None and does *not* fall back: a model that writes
`<answer></answer>` has answered nothing, even if a number appears elsewhere.

`find_answer(text, mode, kind)` makes the fallback configurable (`EXTRACT_MODES`):
    tag     only the `<answer>` block (`accuracy_strict`)
    boxed   the `<answer>` block, else the last `\\boxed{}` (`accuracy_boxed`)
    any     those, else by kind: for choice questions the last "answer is B" / "(B)", then the last
            number; for boxes every box in the visible text; otherwise the last number (`accuracy`)

Examples:
    >>> extract_answer("<think>maybe 3</think><answer> 4 </answer>")
    '4'
    >>> extract_answer("<answer>1</answer> no, <answer>2</answer>")
    '2'
    >>> extract_answer("so \\\\boxed{\\\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    >>> extract_answer("I count 7 squares, so 8 in total.")
    '8'
    >>> extract_answer("<think>it is 5</think>no idea") is None
    True
    >>> find_answer("So the answer is (C).", "any", kind="choice")
    'C'
    >>> find_answer("I count 8.", "boxed") is None
    True
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
EXTRACT_MODES = ("tag", "boxed", "any")
# A number: optional sign, thousands-separated or plain digits, decimals, a fraction, a percent sign.
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?%?|[-+]?\.\d+%?")


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


def last_number(text: str) -> str | None:
    """The last number in `text` as written ("1,000", "-2.5", "1/2", "50%"), or None."""
    matches = _NUMBER.findall(text)
    return matches[-1].replace(" ", "") if matches else None


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


def find_answer(text: str, mode: str = "any", kind: str | None = None) -> str | None:
    """The final answer in `text` by extraction `mode` (see the module docstring); `kind` is the
    answer type, which picks the last-resort fallback of mode "any"."""
    if mode not in EXTRACT_MODES:
        raise ValueError(f"unknown extraction mode {mode!r}; expected one of {', '.join(EXTRACT_MODES)}")
    visible = strip_think(text)
    if "<answer>" in visible:
        blocks = _ANSWER_BLOCK.findall(visible)
        if blocks:
            return blocks[-1].strip() or None
    if mode == "tag":
        return None
    boxed = last_boxed(visible)
    if boxed is not None or mode == "boxed":
        return boxed or None
    if kind == "choice":
        return last_choice(visible) or last_number(visible)
    if kind == "box":
        return visible.strip() or None  # the box parser finds every box; more than one is a hedge
    return last_number(visible)
