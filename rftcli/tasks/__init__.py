"""Built-in synthetic tasks: data with verifiable answers, made in-process without any download.

Each task module has `generate(n, seed, **knobs) -> Iterator[dict]` yielding rows of the `dataset`
schema (without `split`, which prepare-data assigns by id hash). Knobs are given as
`--task-option key=value`; each module's docstring lists its own.

    counting    how many red squares (0..max_count) among blue ones          answer_type number
    comparison  more red or more blue squares (min_gap sets the difficulty)  answer_type choice
    arithmetic  the value of an expression drawn in seven-segment digits     answer_type number
    grounding   the box of a named shape among distractors                   answer_type box
"""

from rftcli.instructions import INSTRUCTION  # noqa: F401  (the default instruction, as rftcli.tasks.INSTRUCTION)
from rftcli.tasks import arithmetic, comparison, counting, grounding

TASKS = {"counting": counting.generate, "comparison": comparison.generate, "arithmetic": arithmetic.generate,
         "grounding": grounding.generate}
