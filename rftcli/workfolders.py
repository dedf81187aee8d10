"""The work folders beside an output, where a stage keeps what it finished before the output is written.

    OUT.parts/   finished shards of rollout, score and eval (`rftcli.shards` writes and reads them)
    OUT.work/    checkpoints of sft-coldstart and train-grpo (`rftcli.training` writes and reads them)

Both the stages and the message that says how to continue after a full disk (`rftcli.errors`) need these
names, so they live here, below all of them; this module imports nothing of rftcli.
"""

from __future__ import annotations

import json
from pathlib import Path


def parts_folder(out: str | Path) -> Path:
    """`OUT.parts`: the finished shards of a sharded stage's output `out`."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def checkpoints_folder(out: Path) -> Path:
    """`OUT.work`: the trainer's output_dir, checkpoints included, for the checkpoint folder `out`."""
    return out.with_name(out.name + ".work")


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete `checkpoint-N` in `folder`. transformers writes `trainer_state.json` last, so a
    checkpoint without a readable one for step N was cut off mid-save."""
    found = []
    for path in folder.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        try:
            state = json.loads((path / "trainer_state.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if step.isdigit() and state.get("global_step") == int(step):
            found.append((int(step), path))
    return max(found)[1] if found else None
