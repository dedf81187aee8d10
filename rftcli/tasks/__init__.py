"""Built-in synthetic tasks: data with verifiable answers, made in-process without any download.

Each task module has `generate(n, seed, **knobs) -> Iterator[dict]` yielding rows of the `dataset`
schema (without `split`, which prepare-data assigns by id hash).
"""

from rftcli.tasks import counting

TASKS = {"counting": counting.generate}

INSTRUCTION = ("Think step by step inside <think> </think> tags, "
               "then give the final answer inside <answer> </answer> tags.")
