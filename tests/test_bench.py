"""The GPU bench script in its CPU smoke mode: every figure it would measure on a GPU runs through the same
code (tiny sizes), so the script a GPU run depends on does not rot. Its numbers measure nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = {"rollout_vs_generate", "rollout_bf16", "rollout_4bit", "grpo_qlora", "grpo_lora_bf16", "sft_lora_bf16"}


@pytest.mark.slow
def test_gpu_bench_smoke_produces_every_figure(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu" / "run_all.py"), "--smoke", "--out", str(out)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["smoke"] is True and result["device"].startswith("cpu")
    figures = result["sizes"]["smoke"]
    assert set(figures) == FIGURES and not [n for n, f in figures.items() if "error" in f]
    overhead = figures["rollout_vs_generate"]
    assert overhead["ratio"] > 0 and overhead["bare_tokens_per_s"] > 0 and len(overhead["ratios"]) == 1
    assert figures["rollout_bf16"]["generated_tokens"] == 2 * 8  # batch 2, fixed length 8
    for name in ("grpo_qlora", "grpo_lora_bf16", "sft_lora_bf16"):
        assert figures[name]["steps"] == 3 and figures[name]["peak_memory_mb"] > 0, name
    markdown = (out / "results.md").read_text()
    assert "smoke, CPU: checks the script, measures nothing" in markdown
    assert "rollout / bare generate tokens/s" in markdown
