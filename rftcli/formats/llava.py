"""LLaVA-style rows: `conversations`, a list of {"from": "human"|"gpt", "value": ...} turns
({"role", "content"} turns are read alike), with `image` (a path or a list of them).

The first human turn becomes the prompt (`<image>` placeholders removed), the first answer turn after it
the answer. An answer turn in the R1 format (`<think>...</think><answer>...</answer>`) gives the answer
inside <answer>, its reasoning, and the whole turn as `response` for SFT. A system turn becomes `system`.
Longer conversations keep only this first exchange; `metadata.turns` records how many turns there were.

Sample (JSON array, as LLaVA-Instruct publishes it):
    [{"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
      "conversations": [{"from": "human", "value": "<image>\\nWhat color is the bus?"}, {"from": "gpt", "value": "White"}]}]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rftcli.formats import BadRow, Context, Where
from rftcli.formats.rows import KNOWN, draft, from_solution, image_refs, metadata_dict

NAME = "llava"
_USER = {"human", "user"}
_ASSISTANT = {"gpt", "assistant", "model"}
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def detect(record: dict[str, Any]) -> bool:
    turns = record.get("conversations")
    return isinstance(turns, list) and bool(turns) and isinstance(turns[0], dict)


def _turn(turn: Any, where: Where) -> tuple[str, str]:
    if not isinstance(turn, dict):
        raise BadRow(where, "each turn must be an object with from/value (or role/content)", column="conversations")
    speaker = str(turn.get("from", turn.get("role", ""))).lower()
    text = turn.get("value", turn.get("content"))
    if not isinstance(text, str):
        raise BadRow(where, f"turn of {speaker or 'unknown speaker'!r} has no text", column="conversations")
    return speaker, text


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    turns = [_turn(t, where) for t in row.pop("conversations", None) or []]
    system = next((text for who, text in turns if who == "system"), None)
    talk = [(who, text) for who, text in turns if who != "system"]
    first_user = next((i for i, (who, _) in enumerate(talk) if who in _USER), None)
    if first_user is None:
        raise BadRow(where, "no human turn", column="conversations")
    reply = next((text for who, text in talk[first_user + 1:] if who in _ASSISTANT), None)
    answer, reasoning, response = reply, None, None
    if reply is not None and (tagged := from_solution(reply)) is not None:
        answer, response = tagged, reply
        if m := _THINK.search(reply):
            reasoning = m.group(1).strip() or None
    meta = metadata_dict(row.pop("metadata", None), where)
    meta.update({k: v for k, v in row.items() if k not in KNOWN})
    if len(talk) > 2:
        meta["turns"] = len(talk)
    images = image_refs(row.pop("images", None)) + image_refs(row.pop("image", None))
    for k in ("image", "images"):
        meta.pop(k, None)
    out = draft(row, where, prompt=talk[first_user][1], answer=answer, images=images, task="llava", metadata=meta)
    out["system"] = out["system"] or system
    out["reasoning"] = out["reasoning"] or reasoning
    out["response"] = out["response"] or response
    return out
