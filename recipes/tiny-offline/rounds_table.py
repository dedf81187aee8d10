"""The per-round table of recipes/tiny-offline: `python rounds_table.py OUT ROUNDS` writes OUT/rounds.md
and OUT/rounds.csv from the files the rounds wrote.

Per round and loop: `reward`, the mean total reward of the completions the round sampled and trained on
(offline: its scores table; online: the mean of the per-step rewards train-grpo logged, every step has as
many completions); `accuracy`, greedy accuracy on the held-out test split after the round (eval's
summary.json); `completions`, completions sampled so far (offline: rows of the scores tables; online:
optimizer steps x completions per step, from the run's manifest). Round 0 is the shared start policy.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from rftcli.atomic import atomic_output
from rftcli.schema import read_table

COLUMNS = ["round", "offline_completions", "offline_reward", "offline_accuracy", "online_completions",
           "online_reward", "online_accuracy"]


def accuracy(eval_folder: Path) -> float:
    models = json.loads((eval_folder / "summary.json").read_text())["models"]
    (summary,) = models.values()
    return float(summary["accuracy"])


def offline_round(folder: Path) -> tuple[int, float]:
    scores = read_table(folder / "scores.parquet", "scores").table
    rewards = [v for v in scores["reward"].to_pylist() if v is not None]
    return scores.num_rows, sum(rewards) / len(rewards)


def online_round(folder: Path) -> tuple[int, float]:
    logged = [json.loads(line) for line in (folder / "grpo" / "metrics.jsonl").read_text().splitlines()]
    rewards = [e["reward"] for e in logged if e.get("reward") is not None]
    steps = max(e["step"] for e in logged)
    manifest = json.loads((folder / "grpo" / "rftcli_manifest.json").read_text())
    config = manifest["config"]
    per_step = config["batch_size"] * config["grad_accum"] * manifest.get("world_size", 1)
    return steps * per_step, sum(rewards) / len(rewards)


def rows(out: Path, rounds: int) -> list[dict[str, object]]:
    start = accuracy(out / "round0" / "eval")
    table = [{"round": 0, "offline_completions": 0, "offline_reward": None, "offline_accuracy": start,
              "online_completions": 0, "online_reward": None, "online_accuracy": start}]
    for r in range(1, rounds + 1):
        row: dict[str, object] = {"round": r}
        for mode, read in (("offline", offline_round), ("online", online_round)):
            sampled, reward = read(out / f"round{r}" / mode)
            row[f"{mode}_completions"] = table[-1][f"{mode}_completions"] + sampled
            row[f"{mode}_reward"] = reward
            row[f"{mode}_accuracy"] = accuracy(out / f"round{r}" / mode / "eval")
        table.append(row)
    return table


def markdown(table: list[dict[str, object]]) -> str:
    def cell(key: str, value: object) -> str:
        if value is None:
            return "-"
        if key.endswith("accuracy"):
            return f"{100 * float(value):.1f}%"
        if key.endswith("reward"):
            return f"{float(value):.3f}"
        return str(value)

    header = "| " + " | ".join(c.replace("_", " ") for c in COLUMNS) + " |"
    lines = [header, "|" + "---:|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(c, row[c]) for c in COLUMNS) + " |" for row in table]
    return "\n".join(lines) + "\n"


def main(out: Path, rounds: int) -> None:
    table = rows(out, rounds)
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    with atomic_output(out / "rounds.csv", overwrite=True) as tmp:
        tmp.write_text(text.getvalue())
    with atomic_output(out / "rounds.md", overwrite=True) as tmp:
        tmp.write_text(markdown(table))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
