"""Built-in synthetic tasks: data with verifiable answers, made in-process without any download.

Each task module has `generate(n, seed, **knobs) -> Iterator[dict]` yielding rows of the `dataset`
schema without `split`. Knobs are given as `--task-option key=value`; each module's docstring lists its own.

Splits are disjoint by content (`disjoint_splits`): row k gets id `<task>-s<seed>-<k>` and the split of that
id's hash; an item (prompt, image bytes, answer) belongs to the split that drew it first, and a draw of an
item another split owns is discarded and drawn again. Small tasks repeat items (counting on 56x56 images
draws the empty image once in 15 rows), so without this a test split repeats training images; with it, the
test split holds only items training never sees, and items may still repeat within one split.

    counting    how many red squares (0..max_count) among blue ones          answer_type number
    comparison  more red or more blue squares (min_gap sets the difficulty)  answer_type choice
    arithmetic  the value of an expression drawn in seven-segment digits     answer_type number
    grounding   the box of a named shape among distractors                   answer_type box
"""

from collections.abc import Callable, Iterator

from rftcli.contamination import row_hash
from rftcli.instructions import INSTRUCTION  # noqa: F401  (the default instruction, as rftcli.tasks.INSTRUCTION)
from rftcli.tasks import arithmetic, comparison, counting, grounding

__all__ = ["INSTRUCTION", "TASKS", "disjoint_splits"]

TASKS = {"counting": counting.generate, "comparison": comparison.generate, "arithmetic": arithmetic.generate,
         "grounding": grounding.generate}


def disjoint_splits(rows: Iterator[dict], n: int, split_of: Callable[[str], str], max_redraws: int = 10_000,
                    excluded: frozenset[bytes] = frozenset()) -> Iterator[dict]:
    """The first `n` rows of `rows` (an endless stream of draws) with ids renumbered and `split` set so that no
    item is in two splits (see the module docstring); each row also carries `_content`, its content hash. A draw
    whose content hash is in `excluded` (items of other files, `prepare-data --exclude`) is drawn again."""
    owner: dict[bytes, str] = dict.fromkeys(excluded, "excluded")
    kept = redrawn = 0
    for row in rows:
        if kept == n:
            return
        prefix = row["id"].rsplit("-", 1)[0]
        row_id = f"{prefix}-{kept:07d}"
        split = split_of(row_id)
        key = row_hash(row)
        if owner.setdefault(key, split) != split:
            redrawn += 1
            if redrawn > max_redraws:
                raise ValueError(f"task {row['task']}: {max_redraws:,} draws in a row repeated items of other splits "
                                 f"after {kept:,} rows; the task has too few distinct items to fill every split "
                                 "without sharing one (or repeating an --exclude file's item): widen it with --task-option (e.g. image_size, max_count) or "
                                 "lower --num")
            continue
        redrawn = 0
        row.update(id=row_id, split=split, _content=key)
        kept += 1
        yield row
    if kept < n:
        raise ValueError(f"task stream ended after {kept} of {n} rows")
