"""The A/B table of recipes/tiny (ab.mk): `python ab_table.py AB_OUT SEED [SEED ...]` writes AB_OUT/ab.md and
AB_OUT/ab.csv from each seed's eval summary (AB_OUT/seed<N>/eval/summary.json, its `grid` of cells).

ab.csv: one row per model, set, prompt and seed with the greedy accuracy. ab.md: per model, set and prompt the
mean accuracy over the seeds with the min-max, then GRPO's gain over its own SFT start per arm (the per-seed
difference, mean and min-max), then the rows evaluated per set.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from statistics import mean

from rftcli.atomic import atomic_output

MODELS = ("sft-weak", "grpo-weak", "sft-true", "grpo-true")
ARMS = (("weak", "sft-weak", "grpo-weak"), ("true", "sft-true", "grpo-true"))


def cells(summary_path: Path) -> dict[tuple[str, str, str], dict]:
    """(model, set, prompt) -> the summary's grid cell."""
    grid = json.loads(summary_path.read_text())["grid"]
    return {(c["model"], c["set"], c["prompt"]): c for c in grid}


def spread(values: list[float]) -> str:
    """Mean with min-max, in percent."""
    if len(values) == 1:
        return f"{values[0]:.1%}"
    return f"{mean(values):.1%} ({min(values):.1%}-{max(values):.1%})"


def main(out: Path, seeds: list[str]) -> None:
    per_seed = {seed: cells(out / f"seed{seed}" / "eval" / "summary.json") for seed in seeds}
    first = per_seed[seeds[0]]
    sets = list(dict.fromkeys(s for _, s, _ in first))
    prompts = list(dict.fromkeys(p for _, _, p in first))
    columns = [(s, p) for s in sets for p in prompts]

    def accuracy(seed: str, model: str, s: str, p: str) -> float:
        return float(per_seed[seed][(model, s, p)]["accuracy"])

    rows = [{"model": m, "set": s, "prompt": p, "seed": seed, "accuracy": accuracy(seed, m, s, p)}
            for seed in seeds for m in MODELS for s, p in columns]
    header = "| model | " + " | ".join(f"{s}, {p}" for s, p in columns) + " |"
    rule = "|---" * (len(columns) + 1) + "|"
    lines = [f"Greedy accuracy, mean over seeds {', '.join(seeds)} (min-max).", "", header, rule]
    for m in MODELS:
        lines.append(f"| {m} | " + " | ".join(spread([accuracy(seed, m, s, p) for seed in seeds])
                                             for s, p in columns) + " |")
    lines += ["", "GRPO's gain over its own SFT start, per seed then mean (min-max), in points.", "",
              header.replace("| model |", "| arm |"), rule]
    for arm, sft, grpo in ARMS:
        gains = [[accuracy(seed, grpo, s, p) - accuracy(seed, sft, s, p) for seed in seeds] for s, p in columns]
        lines.append(f"| {arm} | " + " | ".join(
            f"{100 * mean(g):+.1f} ({100 * min(g):+.1f} to {100 * max(g):+.1f})" if len(g) > 1 else f"{100 * g[0]:+.1f}"
            for g in gains) + " |")
    counts = {s: first[(MODELS[0], s, prompts[0])]["rows"] for s in sets}
    lines += ["", "Rows evaluated: " + ", ".join(f"{s} {n}" for s, n in counts.items()) + "."]
    with atomic_output(out / "ab.md", overwrite=True) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["model", "set", "prompt", "seed", "accuracy"])
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(out / "ab.csv", overwrite=True) as tmp:
        Path(tmp).write_text(buffer.getvalue())


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
