"""The wording rftcli puts into prompts, shared by the built-in tasks, the input layouts and the eval presets.

    INSTRUCTION        the default instruction (`--instruction think`): reason inside <think>, answer inside
                       <answer>; prepare-data, the built-in tasks and eval's presets all append it
    GROUNDING_REQUEST  what a grounding prompt asks before its referring expression: RefCOCO rows, the
                       built-in grounding task and `eval --preset refcoco` ask the same question

The modules that build prompts (`rftcli.formats.prompt`, `rftcli.tasks`, `rftcli.formats.refcoco`,
`rftcli.benchmarks`) import these from here; this module imports nothing of rftcli.
"""

from __future__ import annotations

INSTRUCTION = ("Think step by step inside <think> </think> tags, "
               "then give the final answer inside <answer> </answer> tags.")

GROUNDING_REQUEST = ("Give the bounding box [x1, y1, x2, y2], in pixels of the image, of the region this "
                     "sentence describes: ")


def grounding_prompt(expression: str) -> str:
    """The prompt asking for the box of the region `expression` (a referring expression) describes."""
    return GROUNDING_REQUEST + expression
