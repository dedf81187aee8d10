"""rftcli plan: parameter counts equal transformers' on the published configs, the resize rule equals Qwen2-VL's,
the worst-case sample is found, the CLI prints the breakdown fast, and the training stages' preflight stops a
run that cannot fit before any weights load; the first step runs the longest sample."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from rftcli import ordering, plan
from rftcli.cli import app

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "bench" / "configs").glob("*/config.json"))
runner = CliRunner()


def test_the_four_published_configs_are_there():
    assert [c.parent.name for c in CONFIGS] == ["qwen2.5-vl-3b-instruct", "qwen2.5-vl-7b-instruct",
                                                 "qwen3-vl-4b-instruct", "qwen3-vl-8b-instruct"]


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.parent.name)
def test_parameter_counts_equal_transformers_models(config_path):
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(config_path.parent))
    shape = plan.shape(json.loads(config_path.read_text()))
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert shape.vision_params == sum(p.numel() for n, p in model.named_parameters() if "visual" in n)
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "language_model" in n)
    assert shape.quantizable == linear


def test_published_sizes():
    params = {c.parent.name: plan.shape(json.loads(c.read_text())).params for c in CONFIGS}
    assert params == {"qwen2.5-vl-3b-instruct": 3_754_622_976, "qwen2.5-vl-7b-instruct": 8_292_166_656,
                      "qwen3-vl-4b-instruct": 4_437_815_808, "qwen3-vl-8b-instruct": 8_767_123_696}


@pytest.mark.parametrize("size", [(56, 56), (480, 640), (1080, 1920), (4000, 3000), (20, 900), (28, 28)])
def test_resize_rule_equals_qwen2_vl(size):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    expected = smart_resize(*size, factor=28, min_pixels=3136, max_pixels=1003520)
    assert plan.smart_resize(*size, 28, 3136, 1003520) == tuple(expected)


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, "PNG")
    return buf.getvalue()


def test_worst_case_is_the_most_image_tokens_and_the_longest_prompt():
    shape = plan.shape(json.loads(CONFIGS[0].read_text()))
    settings = plan.Settings(max_pixels=401_408)
    rows = [{"id": "small", "prompt": "How many?", "images": [{"bytes": _png(56, 56)}]},
            {"id": "big", "prompt": "How many?", "images": [{"bytes": _png(4000, 3000)}]},
            {"id": "long", "prompt": "word " * 900, "images": []}]
    sample = plan.worst_case(rows, shape, settings)
    # 4000x3000 under 401,408 pixels: 728 x 532 -> 52 x 38 patches = 1976, 494 tokens.
    assert (sample.patches, sample.image_tokens) == (1976, 494)
    assert sample.prompt_tokens == 1500 + plan.TEMPLATE_TOKENS
    assert sample.source == "rows 'big' (images) and 'long' (prompt)"


def test_four_bit_weights_and_checkpointing_by_hand():
    config = json.loads(CONFIGS[0].read_text())
    shape = plan.shape(config)
    bf16 = plan.plan(config, plan.Settings())
    nf4 = plan.plan(config, plan.Settings(load_in_4bit=True))
    parts = dict((name, size) for name, size, _ in bf16.parts)
    parts4 = dict((name, size) for name, size, _ in nf4.parts)
    assert parts["weights"] == shape.params * 2
    assert parts4["weights"] == pytest.approx(shape.quantizable * (0.5 + 1 / 64 + 4 / 16384)
                                              + (shape.params - shape.quantizable) * 2)
    # LoRA rank 16 on every language linear layer: 16 x (in + out), fp32 on a 16-bit base; AdamW twice that.
    assert parts["LoRA parameters"] == 16 * shape.lora_in_out * 4
    assert parts["optimizer states"] == 2 * parts["LoRA parameters"]
    ckpt = plan.plan(config, plan.Settings(gradient_checkpointing=True))
    assert dict((n, s) for n, s, _ in ckpt.parts)["activations"] < parts["activations"] / 10
    assert bf16.tokens_per_step == 8 * (4096 + 64)


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.parent.name)
def test_cli_prints_the_breakdown_fast(config_path):
    start = time.perf_counter()
    result = runner.invoke(app, ["plan", "-m", str(config_path.parent), "-n", "8", "--max-completion-length", "1024",
                                 "--gpu-memory", "24"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - start < 10
    for part in ("weights", "LoRA parameters", "gradients", "optimizer states", "activations", "logits and log-probs",
                 "KV cache (generation)", "vision tower", "tokens per optimizer step", "does not fit"):
        assert part in result.output
    assert "--load-in-4bit --gradient-checkpointing" in result.output
    assert "yes" in result.output  # some change fits 24 GiB


def test_cli_plans_the_worst_case_of_a_table(dataset):
    result = runner.invoke(app, ["plan", "-m", "builtin:tiny-qwen2.5-vl", "-d", str(dataset)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "worst case: row" in result.output


def test_a_model_without_a_config_is_one_line(tmp_path):
    result = runner.invoke(app, ["plan", "-m", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "no config.json" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_run_over_gpu_memory_stops_before_loading_weights(tmp_path, dataset):
    out = tmp_path / "ckpt"
    result = runner.invoke(app, ["train-grpo", "-d", str(dataset), "-m", "builtin:tiny-qwen2.5-vl", "--out", str(out),
                                 "--max-steps", "1", "--gpu-memory", "0.001"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the run needs about"), result.output
    assert "--no-preflight" in lines[0] and "0.0 GiB" in lines[0]
    # Stopped before the work folder the weights are loaded into: nothing written.
    assert not out.exists() and not Path(f"{out}.work").exists()
    sft = runner.invoke(app, ["sft-coldstart", "-d", str(dataset), "-m", "builtin:tiny-qwen2.5-vl", "--out",
                              str(out), "--max-steps", "1", "--gpu-memory", "0.001"])
    assert sft.exit_code == 2 and "the run needs about" in sft.output and not out.exists()


def test_no_preflight_goes_on(dataset):
    from rftcli.stages import train_grpo
    from rftcli.stages.rollout import used_rows

    rows = used_rows(dataset, "train").to_pylist()
    config = train_grpo.Config(dataset=dataset, model="builtin:tiny-qwen2.5-vl", out=Path("unused"),
                               gpu_memory=0.001, preflight=False)
    assert plan.preflight(config, rows) is None
    with pytest.raises(ValueError, match="needs about"):
        plan.preflight(train_grpo.Config(dataset=dataset, model="builtin:tiny-qwen2.5-vl", out=Path("unused"),
                                         gpu_memory=0.001), rows)
    fits = plan.preflight(train_grpo.Config(dataset=dataset, model="builtin:tiny-qwen2.5-vl", out=Path("unused"),
                                            gpu_memory=24), rows)
    assert fits is not None and fits.fits(24)


def test_colocated_vllm_takes_its_share_before_the_check(dataset):
    from rftcli.stages import train_grpo
    from rftcli.stages.rollout import used_rows

    rows = used_rows(dataset, "train").to_pylist()
    config = train_grpo.Config(dataset=dataset, model="builtin:tiny-qwen2.5-vl", out=Path("unused"), gpu_memory=24)
    need = plan.preflight(config, rows).peak / plan.GIB
    just = need / (1 - plan.VLLM_COLOCATE_SHARE / 2)  # fits alone, not beside vLLM's 30%
    alone = train_grpo.Config(dataset=dataset, model="builtin:tiny-qwen2.5-vl", out=Path("unused"), gpu_memory=just)
    assert plan.preflight(alone, rows) is not None
    beside = train_grpo.Config(dataset=dataset, model="builtin:tiny-qwen2.5-vl", out=Path("unused"), gpu_memory=just,
                               use_vllm=True)
    with pytest.raises(ValueError, match="leaves 70% of its memory to training beside vLLM"):
        plan.preflight(beside, rows)


def test_a_model_the_plan_does_not_know_is_checked_only_when_asked(tmp_path, dataset):
    from rftcli.stages import train_grpo
    from rftcli.stages.rollout import used_rows

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": {}}))
    rows = used_rows(dataset, "train").to_pylist()
    config = train_grpo.Config(dataset=dataset, model=str(tmp_path), out=Path("unused"))
    assert plan.preflight(config, rows) is None  # no --gpu-memory and no CUDA: nothing to check
    with pytest.raises(ValueError, match=r"'gemma3' is not planned for.*--no-preflight"):
        plan.preflight(train_grpo.Config(dataset=dataset, model=str(tmp_path), out=Path("unused"), gpu_memory=24),
                       rows)


def test_first_sampler_swaps_the_longest_row_to_the_front():
    base = [3, 3, 1, 1, 0, 0, 2, 2]  # TRL's RepeatSampler: each prompt G times
    assert list(ordering.FirstSampler(base, 2)) == [2, 2, 1, 1, 0, 0, 3, 3]
    assert list(ordering.FirstSampler(base, 3)) == base
    assert len(ordering.FirstSampler(base, 2)) == 8


def test_the_first_grpo_step_holds_the_longest_sample(tmp_path, dataset):
    from rftcli.loading import load_model
    from rftcli.schema import read_table, write_table
    from rftcli.stages import train_grpo
    from rftcli.stages.rollout import used_rows

    art = read_table(dataset, "dataset")
    rows = art.table.to_pylist()
    train = [i for i, row in enumerate(rows) if row["split"] == "train"]
    longest = train[len(train) // 2]
    rows[longest]["prompt"] += " Count every object, then count again." * 10
    path = tmp_path / "data.parquet"
    write_table(path, "dataset", rows, art.manifest)
    longest_id = rows[longest]["id"]
    config = train_grpo.Config(dataset=path, model="builtin:tiny-qwen2.5-vl", out=tmp_path / "out", batch_size=4,
                               num_generations=2, max_steps=1, seed=3)
    args, build, _ = train_grpo._online_trainer(config, tmp_path / "work")
    trainer = build(load_model("builtin:tiny-qwen2.5-vl", dtype="float32"))
    first_batch = list(trainer._get_train_sampler())[:config.batch_size]
    used = used_rows(path, "train").to_pylist()
    assert {used[i]["id"] for i in first_batch[:2]} == {longest_id}


@pytest.mark.parametrize("name", ["qwen2.5-vl-7b-instruct", "qwen3-vl-8b-instruct"])
def test_calibration_cuts_text_and_vision_depth_alike(name):
    import importlib.util

    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    spec = importlib.util.spec_from_file_location("plan_calibration", ROOT / "bench" / "plan_calibration.py")
    calibration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calibration)
    config = calibration.cut_config(name, 2)
    shape = plan.shape(config)
    assert (shape.layers, shape.vision_depth) == (2, 2)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(**config))
    assert shape.params == sum(p.numel() for p in model.parameters())


def test_phases_add_up_to_the_peak_and_only_online_grpo_on_cpu_pays_the_head_copy():
    config = json.loads(CONFIGS[0].read_text())
    shape = plan.shape(config)

    def generation_above_fixed(p):  # the generation phase without weights, LoRA and optimizer states
        parts = dict((n, s) for n, s, _ in p.parts)
        return dict(p.phases)["generation"] - parts["weights"] - parts["LoRA parameters"] - parts["optimizer states"]

    online = plan.plan(config, plan.Settings(device="cpu", batch_size=4))
    assert [name for name, _ in online.phases] == ["training", "generation"]
    assert online.peak == max(size for _, size in online.phases)  # no CUDA overhead on a CPU
    rollout = plan.plan(config, plan.Settings(stage="rollout", device="cpu", batch_size=4))
    assert [name for name, _ in rollout.phases] == ["generation"]
    head_copy = 4 * shape.vocab * shape.hidden * 2  # one copy of the frozen head per generated sequence
    assert generation_above_fixed(online) - generation_above_fixed(rollout) == pytest.approx(head_copy)
    full = plan.plan(config, plan.Settings(device="cpu", batch_size=4, full=True))
    assert generation_above_fixed(full) == pytest.approx(generation_above_fixed(rollout))
    cuda = plan.plan(config, plan.Settings(device="cuda", batch_size=4))
    assert generation_above_fixed(cuda) == pytest.approx(generation_above_fixed(rollout))
    assert cuda.peak > max(size for _, size in cuda.phases)  # the context and the margin come on top


def test_a_rollout_config_plans_its_prompts_times_their_completions():
    from rftcli.stages import rollout

    config = rollout.Config(dataset=Path("d.parquet"), model="m", out=Path("o"), num_generations=8, batch_size=3)
    assert plan.settings_from(config, "cuda").batch_size == 24
