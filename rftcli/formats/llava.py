"""Chat-style rows: LLaVA `conversations`, a list of {"from": "human"|"gpt", "value": ...} turns, and the
{"role", "content"} messages of LLaMA-Factory's sharegpt layout and of TRL / `datasets` chat data, in
`messages` (or a conversational `prompt`), with `image` / `images` (a path, a list of them, or image
structs).

A turn's content is text or a list of typed parts ({"type": "image"}, {"type": "text", "text": ...},
as in HuggingFaceH4/llava-instruct-mix-vsft): the text parts, joined, are its text; an image part that
holds the image itself ({"type": "image", "image": ...}) gives the row's images when no `images` column
does. The first user turn becomes the prompt (`<image>` placeholders removed), the first answer turn
after it the answer. An answer turn in the R1 format (`<think>...</think><answer>...</answer>`) gives
the answer inside <answer>, its reasoning, and the whole turn as `response` for SFT. A system turn
becomes `system`. Longer conversations keep only this first exchange: the later questions are dropped,
since a `dataset` row holds one question and later ones lean on the earlier answers; `metadata.turns`
records how many turns there were, and prepare-data's summary counts the questions dropped. A
conversation without an answer turn (TRL's prompt-only rows for GRPO) takes the
answer from `completion` (its first answer turn, or text), else `answer`, else `solution` (inside
<answer></answer>, else its last \\boxed{}).

Sample (JSON array, as LLaVA-Instruct publishes it):
    [{"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
      "conversations": [{"from": "human", "value": "<image>\\nWhat color is the bus?"}, {"from": "gpt", "value": "White"}]}]
MM-Eureka (FanqingM/MM-Eureka-Dataset) and OpenRLHF multimodal JSONL write the conversation as the JSON
text of a message list in `message`, with image parts holding paths (file:// URIs too), and the
answer in `answer`.

Sample (LLaMA-Factory data/mllm_demo.json):
    [{"messages": [{"content": "<image>Who are they?", "role": "user"},
                   {"content": "They're Kane and Gretzka from Bayern Munich.", "role": "assistant"}],
      "images": ["mllm_demo_data/1.jpg"]}]
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rftcli.formats import BadRow, Context, Where
from rftcli.formats.rows import (
    _ANSWER_TAG,
    KNOWN,
    accepted_answers,
    answer_text,
    draft,
    from_solution,
    image_refs,
    metadata_dict,
    solution_answer,
)

NAME = "llava"
_USER = {"human", "user"}
_ASSISTANT = {"gpt", "assistant", "model"}
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def _chat(value: Any, role_keys: tuple[str, ...] = ("from", "role")) -> bool:
    if hasattr(value, "tolist"):
        value = value.tolist()
    return (isinstance(value, list) and bool(value) and isinstance(value[0], dict)
            and any(k in value[0] for k in role_keys))


def _turns(value: Any) -> Any:
    """A conversation as a list: MM-Eureka / OpenRLHF write `message` as the JSON text of one."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return value
    return value


def turns_key(record: dict[str, Any]) -> str | None:
    """The column holding the conversation: conversations, messages (or MM-Eureka's `message`, a list or
    its JSON text), or a conversational prompt."""
    turns = record.get("conversations")
    if isinstance(turns, list) and bool(turns) and isinstance(turns[0], dict):
        return "conversations"
    if _chat(record.get("messages")):
        return "messages"
    if _chat(_turns(record.get("message")), ("role",)):
        return "message"
    if _chat(record.get("prompt"), ("role",)):
        return "prompt"
    return None


def detect(record: dict[str, Any]) -> bool:
    return turns_key(record) is not None


def _content(value: Any, images: list[Any]) -> Any:
    """The text of a turn's content: text as it is; the text parts of a list of typed parts, joined
    (image parts holding an image are added to `images`)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list):
        return value
    texts = []
    for part in value:
        if not isinstance(part, dict):
            return None
        if part.get("type") == "text" and isinstance(part.get("text"), str) and part["text"].strip():
            texts.append(part["text"].strip())
        elif part.get("type") == "image" and part.get("image") is not None:
            image = part["image"]  # a path may be a file:// URI (MM-Eureka)
            images.append(image[len("file://"):] if isinstance(image, str) and image.startswith("file://") else image)
    return "\n".join(texts)


def _turn(turn: Any, where: Where, column: str, images: list[Any]) -> tuple[str, str]:
    if not isinstance(turn, dict):
        raise BadRow(where, "each turn must be an object with from/value (or role/content)", column=column)
    speaker = str(turn.get("from", turn.get("role", ""))).lower()
    text = _content(turn.get("value", turn.get("content")), images)
    if not isinstance(text, str) or (isinstance(turn.get("content"), list) and not text):
        raise BadRow(where, f"turn of {speaker or 'unknown speaker'!r} has no text", column=column)
    return speaker, text


def _completion(value: Any, where: Where) -> str | None:
    """The answer in a TRL `completion`: its first answer turn, or its text."""
    if _chat(value, ("role", "from")):
        turns = [_turn(t, where, "completion", []) for t in value]
        return next((text for who, text in turns if who in _ASSISTANT), None)
    return answer_text(value)


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    key = turns_key(row) or "conversations"
    inline: list[Any] = []
    turns = _turns(row.pop(key, None)) or []
    if not isinstance(turns, list):
        raise BadRow(where, "expected a list of turns (or the JSON text of one)", column=key)
    turns = [_turn(t, where, key, inline) for t in turns]
    system = next((text for who, text in turns if who == "system"), None)
    talk = [(who, text) for who, text in turns if who != "system"]
    first_user = next((i for i, (who, _) in enumerate(talk) if who in _USER), None)
    if first_user is None:
        raise BadRow(where, "no human turn", column=key)
    reply = next((text for who, text in talk[first_user + 1:] if who in _ASSISTANT), None)
    answer, reasoning, response = reply, None, None
    if reply is not None and (tagged := from_solution(reply)) is not None:
        answer, response = tagged, reply
        if m := _THINK.search(reply):
            reasoning = m.group(1).strip() or None
    if answer is None and row.get("completion") is not None:
        answer = _completion(row.pop("completion"), where)
    accepted = None
    if answer is None:
        answer, accepted = accepted_answers(row.get("answer"), row.get("answer_type"), where)
    if answer is None and (solved := solution_answer(row.get("solution"))) is not None:
        answer = solved
        if _ANSWER_TAG.fullmatch(row["solution"].strip()):
            row.pop("solution")  # nothing but the answer
    meta = metadata_dict(row.pop("metadata", None), where)
    meta.update({k: v for k, v in row.items() if k not in KNOWN})
    if len(talk) > 2:
        meta["turns"] = len(talk)
    if accepted:
        meta["answers"] = accepted
    images = image_refs(row.pop("images", None)) + image_refs(row.pop("image", None))
    images = images or image_refs(inline)
    for k in ("image", "images"):
        meta.pop(k, None)
    out = draft(row, where, prompt=talk[first_user][1], answer=answer, images=images, task="llava", metadata=meta)
    out["system"] = out["system"] or system
    out["reasoning"] = out["reasoning"] or reasoning
    out["response"] = out["response"] or response
    out["dropped_exchanges"] = sum(1 for who, _ in talk[first_user + 1:] if who in _USER)
    return out
