"""Prompt variants for `eval --prompt`: the same rows asked in other words, so a gain measured under one
prompt can be checked under another (a base model may answer better when asked directly than when asked
to reason in tags).

    dataset      the row's prompt as stored (or as the preset builds it): no change
    direct       the direct-answer control: the reasoning instruction removed and a request for a bare
                 answer appended by answer type (`DIRECT_REQUESTS`); a system prompt asking for
                 <think>/<answer> tags is dropped
    think        the default instruction (`rftcli.instructions.INSTRUCTION`) in place of the row's
    NAME=TEXT    your own: TEXT in place of the row's instruction; TEXT holding `{question}` is a template
                 (the prompt without its instruction goes there), as `prepare-data --instruction` reads it

Removing the instruction: every named instruction of `rftcli.formats.prompt.INSTRUCTIONS` and the default
`INSTRUCTION` are cut wherever they stand, then any sentence or line still asking for `<think>`/`<answer>`
tags or `\\boxed{}` (instructions of published datasets: "Output the thinking process in <think> </think>
and final answer in <answer> </answer> tags."). The question itself is kept as written.

Scoring: `dataset` and `think` keep the strict rule (the answer slot only); `direct` and custom variants
are scored by the direct-answer rule, extraction mode "whole" of `rftcli.rewards.text` (the slot if there
is one, else the whole visible completion must hold exactly one answer), since a bare "3" has no slot.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rftcli.instructions import INSTRUCTION

BUILTIN_VARIANTS = ("dataset", "direct", "think")
DEFAULT_VARIANTS = ("dataset",)
DIRECT_REQUESTS = {
    "number": "Answer with a single number.",
    "choice": "Answer with the option's letter.",
    "box": "Answer with the box as [x1, y1, x2, y2].",
}
"""The direct-answer request per answer_type; every other type gets `DIRECT_OTHER`."""
DIRECT_OTHER = "Answer with a single word or phrase."
STRICT_RULE = "strict"
"""The answer slot only (<answer>, else \\boxed{}): extraction mode "boxed"."""
WHOLE_RULE = "whole"
"""The direct-answer rule: extraction mode "whole"."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TAGS = ("<think>", "</think>", "<answer>", "</answer>", "\\boxed{")
# A sentence: up to and including its end mark and the space after it, or a line without one.
_SENTENCE = re.compile(r"[^\n.!?]*(?:[.!?]+(?=\s|$)[ \t]*|\n|$)")


@dataclass(frozen=True)
class PromptVariant:
    name: str
    """The variant's name in tables: dataset, direct, think or your own."""
    instruction: str | None
    """The instruction put in place of the row's (None: the row's own, kept; '' with `direct`: by answer type)."""

    @property
    def kind(self) -> str:
        return self.name if self.name in BUILTIN_VARIANTS else "custom"

    @property
    def rule(self) -> str:
        """How an answer is read under this variant: `STRICT_RULE` or `WHOLE_RULE`."""
        return STRICT_RULE if self.kind in ("dataset", "think") else WHOLE_RULE

    def describe(self) -> dict[str, Any]:
        """What summary.json says of the variant: its instruction, system prompt handling and rule."""
        instruction: Any = {"dataset": "as stored", "direct": {**DIRECT_REQUESTS, "other": DIRECT_OTHER}}.get(
            self.kind, self.instruction)
        system = "dropped when it asks for <think>/<answer> tags" if self.kind == "direct" else "as stored"
        return {"instruction": instruction, "system": system, "rule": self.rule}

    def apply(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The row as this variant asks it: `prompt` (and for `direct`, `system`) rewritten."""
        if self.kind == "dataset":
            return dict(row)
        from rftcli.formats.prompt import apply_instruction

        question = strip_instruction(row["prompt"])
        out = dict(row)
        if self.kind == "direct":
            out["prompt"] = apply_instruction(question, direct_request(row.get("answer_type")))
            if asks_for_tags(row.get("system")):
                out["system"] = None
        else:
            out["prompt"] = apply_instruction(question, self.instruction or "")
        return out


def direct_request(answer_type: str | None) -> str:
    return DIRECT_REQUESTS.get((answer_type or "").strip().lower(), DIRECT_OTHER)


def asks_for_tags(system: str | None) -> bool:
    """Whether a system prompt asks for <think>/<answer> tags (or a \\boxed{} answer)."""
    return bool(system) and any(tag in system for tag in _TAGS)


def _known_instructions() -> list[str]:
    from rftcli.formats.prompt import INSTRUCTIONS

    texts = {INSTRUCTION, *INSTRUCTIONS.values()}
    return sorted((t for t in texts if t), key=len, reverse=True)  # longest first: no text cut halfway


def strip_instruction(prompt: str) -> str:
    """`prompt` without its answer-format instruction (see the module docstring)."""
    text = prompt
    for instruction in _known_instructions():
        text = text.replace(instruction, " ")
    if any(tag in text for tag in _TAGS):
        text = "".join(s for s in _SENTENCE.findall(text) if not any(tag in s for tag in _TAGS))
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    return "\n".join(line for line in lines if line) or prompt.strip()


def parse_variant(spec: str) -> PromptVariant:
    """One `--prompt` value: a built-in name or NAME=TEXT."""
    spec = spec.strip()
    name, eq, text = spec.partition("=")
    name = name.strip()
    if not eq:
        if name == "think":
            return PromptVariant("think", INSTRUCTION)
        if name in BUILTIN_VARIANTS:
            return PromptVariant(name, None if name == "dataset" else "")
        raise ValueError(f"unknown prompt variant {spec!r}: built-in {', '.join(BUILTIN_VARIANTS)}, or NAME=TEXT "
                         "for your own instruction")
    if not _NAME.fullmatch(name):
        raise ValueError(f"prompt variant {spec!r}: NAME=TEXT needs a name of letters, digits, '_', '-' or '.'")
    if name in BUILTIN_VARIANTS:
        raise ValueError(f"prompt variant {spec!r}: {name} is built in; give your own variant another name")
    return PromptVariant(name, text.strip())


def parse_variants(specs: Sequence[str]) -> list[PromptVariant]:
    """Every `--prompt` value, names unique."""
    if not specs:
        raise ValueError("give at least one --prompt (dataset, direct, think or NAME=TEXT)")
    variants = [parse_variant(s) for s in specs]
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"prompt variant names must be unique, got {', '.join(names)}")
    return variants
