"""Every built-in model family through every stage, in-process: each cell of the support table
(rftcli.families.support) either passes or is refused up front with the table's reason.

The families come from the registry (rftcli.families.FAMILIES) plus the Qwen2.5-VL built-in, so a family
added there is tested here without an edit. Sizes are test-sized: 4 prompts, 2 generations, 4 new tokens,
one optimizer step.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from rftcli.families import FAMILIES
from rftcli.families.support import CELLS, SUPPORT, matrix
from rftcli.schema import read_table

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["tiny-qwen2.5-vl", *FAMILIES]
LIMIT, GENERATIONS, NEW_TOKENS = 4, 2, 4
TRAIN = dict(max_steps=1, batch_size=GENERATIONS * 2, learning_rate=1e-2, lr_scheduler="constant", warmup_ratio=0.0,
             logging_steps=1, limit=LIMIT)
GRADED = "def length(completions, **kw):\n    return [len(c[0]['content'] if isinstance(c, list) else c) / 10 " \
         "for c in completions]\n"


@pytest.fixture(scope="module", autouse=True)
def _frozen_heap():
    """Every training run and eval ends in gc.collect() (accelerate frees device memory); in a test session that
    holds every imported module, each scan took ~0.7 s on a busy machine. `Cells.run` freezes what exists before
    each cell, so a scan sees only that cell's objects; all is collectable again after this module."""
    import gc

    yield
    gc.unfreeze()
    gc.collect()


def test_readme_holds_the_rendered_matrix():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- families:start -->\n(.*?)<!-- families:end -->", readme, re.S)
    assert block, "README.md lacks the <!-- families:start --> ... <!-- families:end --> block"
    assert block.group(1) == matrix(), "README's family matrix is stale: python -m rftcli.families --matrix"


def test_every_family_has_a_support_row():
    assert set(SUPPORT) == set(NAMES)
    assert all(set(row.cells()) == set(CELLS) for row in SUPPORT.values())


def _lora_b(folder: Path) -> float:
    from safetensors.torch import load_file

    weights = load_file(folder / "adapter_model.safetensors")
    assert any("lora_B" in k for k in weights)
    return sum(float(v.abs().sum()) for k, v in weights.items() if "lora_B" in k)


def _vision_names(model) -> list[str]:
    from rftcli.training import model_parts

    return model_parts(model)["vision"]


class Cells:
    """Runs the cells of one family in order, each either passing or refused with the table's reason."""

    def __init__(self, name: str, tmp: Path):
        self.name, self.tmp, self.reasons, self.done = name, tmp, SUPPORT[name].cells(), set()

    def run(self, cell: str, body) -> None:
        import gc

        reason = self.reasons[cell]
        gc.freeze()  # see _frozen_heap
        if reason is None:
            body()
            self.done.add(cell)
        else:
            with pytest.raises(ValueError, match=re.escape(reason)):
                body()


def _check_build(name: str, tmp: Path) -> Path:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rftcli import tiny_model
    from rftcli.chat import prompt_messages
    from rftcli.processor_compat import ensure_processor_loads_without_torchvision

    ensure_processor_loads_without_torchvision()
    first = tiny_model.build(f"builtin:{name}", tmp / "model", seed=0)
    again = tiny_model.build(f"builtin:{name}", tmp / "again", seed=0)
    for f in sorted(p.name for p in first.iterdir()):  # deterministic: every file byte-identical
        assert (first / f).read_bytes() == (again / f).read_bytes(), f
    model = AutoModelForImageTextToText.from_pretrained(first)
    processor = AutoProcessor.from_pretrained(first)
    params = sum(p.numel() for p in model.parameters())
    assert 50_000 < params < 2_000_000, params
    assert _vision_names(model), "no vision tower found by rftcli.training.model_parts"
    # One 56x56 image gives a handful of image tokens, and the template places them.
    from PIL import Image

    row = {"prompt": "How many red squares are in the image?", "images": [{}]}
    text = processor.apply_chat_template(prompt_messages(row), add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=[[Image.new("RGB", (56, 56), (200, 0, 0))]], return_tensors="pt")
    image_tokens = int((enc["input_ids"] == model.config.image_token_id).sum())
    assert 1 <= image_tokens <= 64, image_tokens
    # SFT trains on the prompt + target rendering: the sampling prompt must be its prefix, or the model is trained
    # on a context that it never sees when sampling.
    target = [{"role": "assistant", "content": [{"type": "text", "text": "<think>I see 2.</think>\n<answer>2</answer>"}]}]
    full = processor.apply_chat_template(prompt_messages(row) + target, tokenize=False)
    assert full.startswith(text), (text, full)
    with torch.no_grad():
        assert torch.isfinite(model(**enc).logits).all()
    return first


def _check_logprobs(rollouts: Path, model_dir: Path) -> None:
    """Stored log-probs equal a fresh teacher-forced forward's (temperature 1, no top-k/top-p)."""
    from rftcli.generation import encode_prompts, extend_inputs
    from rftcli.loading import load_model

    loaded = load_model(str(model_dir), dtype="float32")
    model = loaded.model.eval()
    worst = 0.0
    for row in read_table(rollouts, "rollouts").table.slice(0, 2).to_pylist():
        enc = encode_prompts(loaded.processor, [row], "cpu")
        ids = torch.tensor([row["completion_ids"]])
        with torch.no_grad():
            logits = model(**extend_inputs(enc, ids)).logits[0, enc["input_ids"].shape[1] - 1:-1].float()  # [T, V]
        lp = torch.log_softmax(logits, -1).gather(1, ids[0][:, None]).squeeze(1)  # [T]
        worst = max(worst, float((lp - torch.tensor(row["logprobs"])).abs().max()))
    assert worst < 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_family_runs_every_stage(name, tmp_path, dataset):
    from rftcli.loading import load_model
    from rftcli.stages import eval as eval_stage
    from rftcli.stages import merge, rollout, score, sft_coldstart, train_grpo

    cells = Cells(name, tmp_path)
    graded = tmp_path / "graded.py"
    graded.write_text(GRADED)
    model = tmp_path / "model"
    cells.run("build", lambda: _check_build(name, tmp_path))
    assert "build" in cells.done, "every family must build"
    spec = str(model)
    rollouts, scores, adapters = tmp_path / "rollouts.parquet", tmp_path / "scores.parquet", {}

    def do_rollout():
        rollout.run(rollout.Config(dataset=dataset, model=spec, out=rollouts, num_generations=GENERATIONS,
                                   max_new_tokens=NEW_TOKENS, limit=LIMIT, batch_size=LIMIT, dtype="float32"),
                    progress=False)
        assert read_table(rollouts, "rollouts").table.num_rows == LIMIT * GENERATIONS
        _check_logprobs(rollouts, model)

    def do_score():
        result = score.run(score.Config(rollouts=rollouts, out=scores, workers=1,
                                        rewards=(f"{graded}:length", "format=0.2")))
        assert result.rows == LIMIT * GENERATIONS and read_table(scores, "scores").reward_names == ["length", "format"]

    def do_sft(cell: str, four_bit: bool):
        out = tmp_path / cell
        result = sft_coldstart.run(sft_coldstart.Config(dataset=dataset, model=spec, out=out, load_in_4bit=four_bit,
                                                        lora_dropout=0.0, dtype="float32", **TRAIN))
        assert result.steps == 1 and _lora_b(out) > 0
        adapters[cell] = out

    def do_grpo(cell: str, offline: bool):
        out = tmp_path / cell
        source = dict(rollouts=scores) if offline else dict(dataset=dataset, rewards=(f"{graded}:length",))
        result = train_grpo.run(train_grpo.Config(model=spec, out=out, num_generations=GENERATIONS,
                                                  max_completion_length=NEW_TOKENS, dtype="float32", **source,
                                                  **TRAIN))
        assert result.steps == 1 and _lora_b(out) > 0
        adapters[cell] = out

    def do_merge():
        adapter = next(iter(adapters.values()))
        result = merge.run(merge.Config(adapter=adapter, out=tmp_path / "merged"))
        assert result.max_logit_diff < 1e-4 < result.adapter_effect  # merged logits = the adapter model's

    def do_eval():
        models = (str(next(iter(adapters.values()))),) if adapters else (spec,)  # an adapter: on its base
        result = eval_stage.run(eval_stage.Config(dataset=dataset, models=models, out=tmp_path / "eval",
                                                  max_new_tokens=NEW_TOKENS, limit=LIMIT, dtype="float32"),
                                progress=False)
        assert all(s["rows"] == LIMIT for s in result.summary["models"].values())

    cells.run("rollout", do_rollout)
    if "rollout" in cells.done:
        cells.run("score", do_score)
    cells.run("sft-lora", lambda: do_sft("sft-lora", False))
    cells.run("sft-qlora", lambda: do_sft("sft-qlora", True))
    if "sft-qlora" in cells.done:  # the vision tower stays out of 4-bit
        import bitsandbytes as bnb

        loaded = load_model(spec, load_in_4bit=True, dtype="float32", device="cpu")
        vision = _vision_names(loaded.model)
        four_bit = [n for n, m in loaded.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert four_bit and not [n for n in four_bit if any(n.startswith(v + ".") for v in vision)]
    cells.run("grpo-online", lambda: do_grpo("grpo-online", False))
    if "score" in cells.done:
        cells.run("grpo-offline", lambda: do_grpo("grpo-offline", True))
    if adapters:
        cells.run("merge", do_merge)
    cells.run("eval", do_eval)
    skipped = set(CELLS) - cells.done - {c for c, r in cells.reasons.items() if r}
    assert not skipped, f"cells not run (their inputs were refused): {sorted(skipped)}"


def test_a_refused_cell_stops_the_stage_up_front(tmp_path, dataset, sft_adapter, monkeypatch):
    """A `no` cell refuses any model of that model_type (a built-in name, an adapter on one) before any work:
    one error line with the table's reason, exit 2, nothing written."""
    from typer.testing import CliRunner

    from rftcli.cli import app
    from rftcli.families import support

    monkeypatch.setitem(support.SUPPORT, "tiny-qwen2.5-vl",
                        support.Row("qwen2_5_vl", {"rollout": "a reason", "merge": "another reason"}))
    out = tmp_path / "r.parquet"
    result = CliRunner().invoke(app, ["rollout", "-d", str(dataset), "-m", "builtin:tiny-qwen2.5-vl", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "rollout is not supported for qwen2_5_vl models on this stack: a reason" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
    result = CliRunner().invoke(app, ["merge", "--adapter", str(sft_adapter), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "merge is not supported for qwen2_5_vl models on this stack: another reason" \
        in result.output
    assert not (tmp_path / "m").exists()


def test_tiny_qwen3_5_keeps_both_attention_kinds_and_trains_both():
    """Qwen3.5 is hybrid: a Gated DeltaNet (linear-attention) layer and a full-attention layer, and LoRA's targets
    reach into both (the torch fallback of the CUDA-only kernels runs here)."""
    import re as regex

    from rftcli.loading import load_model
    from rftcli.training import lora_target_modules

    model = load_model("builtin:tiny-qwen3.5", dtype="float32").model
    assert model.config.text_config.layer_types == ["linear_attention", "full_attention"]
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"Qwen3_5GatedDeltaNet", "Qwen3_5Attention"} <= kinds
    pattern = lora_target_modules(model)
    targeted = [n for n, _ in model.named_modules() if regex.fullmatch(pattern, n)]
    assert any(".linear_attn." in n for n in targeted) and any(".self_attn." in n for n in targeted)
    assert not any("visual" in n for n in targeted)
