"""The memory tiers of recipes/geo3k, clevr-count and refcoco record `rftcli plan`'s predicted peaks in their
Makefiles (`# plan: train X GiB, eval Y GiB`) and in docs/recipes.md; both must equal what the plan says for
the tier's settings (read from real `make`) on the published Qwen2.5-VL-3B config, and fit the tier."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rftcli import plan
from rftcli.model_shape import read_model_config

ROOT = Path(__file__).resolve().parent.parent
VARS = ("QLORA", "GC", "GROUP", "BATCH", "ACCUM", "MAX_PIXELS", "COMPLETION", "EVAL_BATCH")
RECIPES = ("geo3k", "clevr-count", "refcoco")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def tier(recipe: str, mem: int) -> dict[str, int]:
    """The tier's settings as make resolves them."""
    show = "show-tier: ; @echo " + " ".join(f"$({v})" for v in VARS)
    out = subprocess.run(["make", "-s", "-C", str(ROOT / "recipes" / recipe), f"MEM={mem}", "--eval", show,
                          "show-tier"], capture_output=True, text=True, check=True).stdout.split()
    return dict(zip(VARS, map(int, out), strict=True))


def predicted(t: dict[str, int]) -> tuple[float, float]:
    """The Makefiles' commands: train-grpo with the tier's settings, eval as a rollout of EVAL_BATCH sequences."""
    config = read_model_config(str(ROOT / "bench" / "configs" / "qwen2.5-vl-3b-instruct"))
    common = dict(max_completion_length=t["COMPLETION"], max_prompt_length=1024, max_pixels=t["MAX_PIXELS"])
    train = plan.plan(config, plan.Settings(num_generations=t["GROUP"], batch_size=t["BATCH"], grad_accum=t["ACCUM"],
                                            load_in_4bit=bool(t["QLORA"]), gradient_checkpointing=bool(t["GC"]),
                                            **common))
    evaluate = plan.plan(config, plan.Settings(stage="rollout", num_generations=1, batch_size=t["EVAL_BATCH"], **common))
    return round(train.peak / plan.GIB, 2), round(evaluate.peak / plan.GIB, 2)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recorded_tier_peaks_are_the_plans(recipe):
    text = (ROOT / "recipes" / recipe / "Makefile").read_text()
    recorded = [(float(a), float(b)) for a, b in re.findall(r"# plan: train ([\d.]+) GiB.*?, eval ([\d.]+) GiB", text)]
    assert len(recorded) == 3
    for mem, figures in zip((12, 16, 24), recorded, strict=True):
        now = predicted(tier(recipe, mem))
        assert figures == now, f"{recipe} MEM={mem}: the Makefile says {figures}, rftcli plan {now}"
        assert max(now) <= mem


def test_the_docs_tier_table_is_the_makefiles():
    docs = (ROOT / "docs" / "recipes.md").read_text()
    for mem in (12, 16, 24):
        geo, other = predicted(tier("geo3k", mem)), predicted(tier("clevr-count", mem))
        assert f"| geo3k {geo[0]:.2f} / {geo[1]:.2f} GiB; others {other[0]:.2f} / {other[1]:.2f} GiB |" in docs
