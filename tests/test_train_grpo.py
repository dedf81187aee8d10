"""train-grpo online and offline on the tiny model: the GRPO math against hand-worked numbers and against
TRL's own code on the same tensors, parameters that move in both modes, the refusals, dynamic sampling,
resume of a killed run, and two processes over gloo."""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rftcli import grpo_loss
from rftcli.cli import app
from rftcli.manifest import read_checkpoint_manifest
from rftcli.schema import read_table, write_table
from rftcli.stages import rollout, score, train_grpo
from rftcli.training import work_folder

from .conftest import kill_after_checkpoint

runner = CliRunner()
ADAPTER = "adapter_model.safetensors"
OUTPUT_FILES = {"adapter_config.json", ADAPTER, "rftcli_manifest.json", "metrics.jsonl", "tokenizer.json",
                "tokenizer_config.json", "chat_template.jinja", "processor_config.json", "README.md"}
REWARDS_PY = '''
def graded(completions, **kw):
    """A graded reward (so a random policy's groups differ); abstains on every third length."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [None if len(t) % 3 == 0 else len(t) / 50 for t in texts]

def letters(completions, **kw):
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [t.count("a") / 5 for t in texts]

def flat_on_even_ids(completions, id, **kw):
    """Constant within the groups of prompts whose id ends in an even digit: those groups have no variance."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 if i[-1] in "02468" else len(t) / 50 for t, i in zip(texts, id)]
'''


@pytest.fixture(scope="module")
def rewards_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rewards") / "my_rewards.py"
    path.write_text(REWARDS_PY)
    return path


@pytest.fixture(scope="module")
def varied_rollouts(tmp_path_factory, dataset, tiny_model_dir) -> Path:
    """6 prompts x 4 completions of up to 10 tokens; the stop string "k" ends some early, so completion
    lengths differ and the loss types' normalisations give different values."""
    out = tmp_path_factory.mktemp("grpo_rollouts") / "rollouts.parquet"
    rollout.run(rollout.Config(dataset=dataset, model=str(tiny_model_dir), out=out, num_generations=4,
                               max_new_tokens=10, limit=6, batch_size=8, seed=1, stop=("k",)), progress=False)
    return out


@pytest.fixture(scope="module")
def scores(tmp_path_factory, varied_rollouts, rewards_file) -> Path:
    out = tmp_path_factory.mktemp("grpo_scores") / "scores.parquet"
    score.run(score.Config(rollouts=varied_rollouts, out=out, workers=1,
                           rewards=(f"{rewards_file}:graded=1", f"{rewards_file}:letters=0.5", "format=0.2")))
    return out


def _logged(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _lora_b(folder: Path) -> float:
    weights = load_file(folder / ADAPTER)
    return sum(float(v.abs().sum()) for k, v in weights.items() if "lora_B" in k)


# ---------------------------------------------------------------- the math by hand

def test_group_advantages_by_hand():
    nan = math.nan
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5, nan, 2.0, 0.0, nan])
    groups = torch.tensor([7, 7, 7, 7, 3, 3, 3, 3, 5, 5, 5, 5])
    adv, zero_std = grpo_loss.group_advantages(rewards, groups, "group")
    std = math.sqrt((0.75**2 + 3 * 0.25**2) / 3)  # [1, 0, 0, 0]: mean 0.25, Bessel-corrected std = 0.5
    expected = [0.75 / (std + 1e-4)] + [-0.25 / (std + 1e-4)] * 3 + [0.0] * 4 \
        + [0.0, 1 / (math.sqrt(2) + 1e-4), -1 / (math.sqrt(2) + 1e-4), 0.0]  # NaN rows: left out, advantage 0
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)
    assert zero_std.tolist() == [True, False, False]  # group ids sorted: 3 (flat), 5, 7
    adv, _ = grpo_loss.group_advantages(rewards, groups, "none")
    assert adv.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0, 0, 1, -1, 0])
    adv, _ = grpo_loss.group_advantages(rewards, groups, "batch")
    valid = rewards[~torch.isnan(rewards)]
    assert adv[0].item() == pytest.approx(0.75 / (valid.std().item() + 1e-4), rel=1e-6)


def test_clipped_loss_by_hand():
    """One token per sequence: a ratio of 1.5 on a positive advantage is clipped at 1.2 (no gradient);
    a ratio of 0.5 on a negative advantage is clipped at 0.8 (no gradient); 1.1 passes through."""
    logps = torch.log(torch.tensor([[1.5], [0.5], [1.1]])).requires_grad_()
    old = torch.zeros(3, 1)
    adv = torch.tensor([2.0, -1.0, 1.0])
    mask = torch.ones(3, 1)
    parts = grpo_loss.grpo_loss(logps, old, adv, mask, grpo_loss.LossSettings(loss_type="grpo"))
    assert parts.loss.item() == pytest.approx(-(1.2 * 2 - 0.8 * 1 + 1.1 * 1) / 3)
    parts.loss.backward()
    assert logps.grad[:, 0].tolist() == pytest.approx([0.0, 0.0, -1.1 / 3])
    fractions = grpo_loss.clip_fractions(parts.ratio, adv, grpo_loss.LossSettings())
    assert fractions["clip_ratio/high_mean"][:, 0].tolist() == [1, 0, 0]
    assert fractions["clip_ratio/low_mean"][:, 0].tolist() == [0, 1, 0]


# ---------------------------------------------------------------- against TRL's implementation

def _trl_pipeline(scores_path: Path, model_dir: Path, scale: str, **grpo_args):
    """TRL's GRPOTrainer fed the scored completions through its `rollout_func` hook, and the rewards as
    reward functions returning the stored values: TRL then computes rewards, advantages and every loss
    input itself. Returns (trainer, its loss inputs for the whole table, the table's rows)."""
    from trl import GRPOConfig, GRPOTrainer

    from rftcli.generation import encode_prompts
    from rftcli.loading import load_model
    from rftcli.training import trl_dataset

    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    art = read_table(scores_path, "scores")
    rows = art.table.to_pylist()
    loaded = load_model(str(model_dir))
    weights = {r["name"]: r["weight"] for r in art.manifest["rewards"]}

    def rollout_func(prompts, trainer):
        assert len(prompts) == len(rows)
        return {"prompt_ids": [encode_prompts(loaded.processor, [r], "cpu")["input_ids"][0].tolist() for r in rows],
                "completion_ids": [r["completion_ids"] for r in rows], "logprobs": [r["logprobs"] for r in rows],
                **{f"stored_{n}": [r[f"reward_{n}"] for r in rows] for n in weights}}

    def stored(name):
        def reward(completions, **kw):
            return kw[f"stored_{name}"]
        reward.__name__ = name
        return reward

    args = GRPOConfig(output_dir=str(scores_path.parent / "trl"), per_device_train_batch_size=len(rows) // 2,
                      gradient_accumulation_steps=2, num_generations=4, max_completion_length=rows[0]["max_new_tokens"],
                      temperature=rows[0]["temperature"], scale_rewards=scale, reward_weights=list(weights.values()),
                      use_cpu=True, bf16=False, report_to=[], **grpo_args)
    dataset = trl_dataset(art.table, with_completion=False)  # one TRL row per completion, in group order
    trainer = GRPOTrainer(model=loaded.model, reward_funcs=[stored(n) for n in weights], args=args,
                          train_dataset=dataset, processing_class=loaded.processor, rollout_func=rollout_func)
    trainer.model.train()
    inputs = trainer._generate_and_score_completions([dataset[i] for i in range(len(rows))])
    return trainer, inputs, rows


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_offline_batch_and_advantages_equal_trls(scores, tiny_model_dir, scale):
    """From the same scored completions and reward weights, the offline mode's advantages and loss inputs
    (prompt tokens, images, completion tokens and mask) are TRL's."""
    from rftcli.loading import load_processor
    from rftcli.offline_grpo import RolloutCollator, load_offline

    _, trl_inputs, rows = _trl_pipeline(scores, tiny_model_dir, scale)
    data = load_offline(scores, split="train", limit=None, scale_rewards=scale, dynamic_sampling=False, rewards=None,
                        policy_hash=rows[0]["policy_hash"], allow_policy_mismatch=False)
    assert [r["completion_ids"] for r in data.rows] == [r["completion_ids"] for r in rows]
    batch = RolloutCollator(load_processor(str(tiny_model_dir)))(data.rows)
    assert torch.isnan(torch.tensor([r["reward_graded"] if r["reward_graded"] is not None else math.nan
                                     for r in rows])).any()  # abstentions are exercised
    assert (batch["advantages"] - trl_inputs["advantages"]).abs().max() < 1e-6
    for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "pixel_values", "image_grid_thw",
                "mm_token_type_ids"):
        assert torch.equal(batch[key], trl_inputs[key]), key
    assert torch.allclose(batch["old_per_token_logps"], trl_inputs["sampling_per_token_logps"])


def test_stored_logprobs_equal_the_trainers_so_the_ratio_starts_at_one(scores, tiny_model_dir):
    """The offline trainer's log-probs of the sampling policy (TRL's fused LM head) agree with what rollout
    stored, so pi/pi_old is 1 before the first update, up to float noise."""
    from trl.trainer.utils import add_fused_lm_head

    from rftcli.loading import load_model
    from rftcli.offline_grpo import RolloutCollator, completion_logps, load_offline

    loaded = load_model(str(tiny_model_dir))
    data = load_offline(scores, split="train", limit=None, scale_rewards="group", dynamic_sampling=False, rewards=None,
                        policy_hash="any", allow_policy_mismatch=True)
    add_fused_lm_head(loaded.model, temperature=data.temperature, outputs=("log_probs", "entropy"))
    batch = RolloutCollator(loaded.processor)(data.rows)
    with torch.no_grad():
        logps, _ = completion_logps(loaded.model.eval(), batch)
    mask = batch["completion_mask"].bool()
    assert float((logps - batch["old_per_token_logps"])[mask].abs().max()) < 1e-4


CASES = [dict(loss_type=t) for t in grpo_loss.LOSS_TYPES] + [
    dict(loss_type="dapo", beta=0.05, importance_sampling_level="sequence"),
    dict(loss_type="grpo", beta=0.05, top_entropy_quantile=0.5),
]


@pytest.fixture(scope="module")
def trl_comparison(scores, tiny_model_dir):
    """For each case: TRL's `_compute_loss` and the offline trainer's `compute_loss` on one micro-batch
    (the first half of the table) of an optimizer step over the whole table, both models moved by the
    same random perturbation away from the sampling policy so ratios leave 1 and clipping engages.
    Returns {case: (TRL loss, rftcli loss, max |grad diff|, max |grad|, clipped share)}."""
    from transformers import TrainingArguments
    from trl.trainer.utils import add_fused_lm_head

    from rftcli.loading import load_model
    from rftcli.offline_grpo import RolloutCollator, build_trainer, load_offline

    results = {}
    for case in CASES:
        eps_high = 3.0 if case["loss_type"] == "cispo" else 0.28
        trl_trainer, trl_full, rows = _trl_pipeline(scores, tiny_model_dir, "group", epsilon_high=eps_high, **case)
        data = load_offline(scores, split="train", limit=None, scale_rewards="group", dynamic_sampling=False,
                            rewards=None, policy_hash=rows[0]["policy_hash"], allow_policy_mismatch=False)
        loaded = load_model(str(tiny_model_dir))
        ours_model = loaded.model
        ref = copy.deepcopy(ours_model).eval().requires_grad_(False) if case.get("beta") else None
        if ref is not None:
            add_fused_lm_head(ref, temperature=data.temperature)
        add_fused_lm_head(ours_model, temperature=data.temperature, outputs=("log_probs", "entropy"))
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for a, b in zip(trl_trainer.model.parameters(), ours_model.parameters(), strict=True):
                noise = 0.05 * torch.randn(a.shape, generator=gen)
                a.add_(noise)
                b.add_(noise)
        collate = RolloutCollator(loaded.processor)
        micro = collate(data.rows[: len(rows) // 2])
        step_tokens = trl_full["completion_mask"].sum()  # the generation batch = the optimizer step's two halves

        trl_inputs = {**micro, "num_items_in_batch": step_tokens}
        if case.get("beta"):
            trl_inputs["ref_per_token_logps"], _, _ = trl_trainer._get_per_token_logps_and_entropies(
                trl_trainer.ref_model, torch.cat([micro["prompt_ids"], micro["completion_ids"]], 1),
                torch.cat([micro["prompt_mask"], micro["completion_mask"]], 1), micro["completion_ids"].size(1),
                pixel_values=micro["pixel_values"], image_grid_thw=micro["image_grid_thw"],
                num_images=micro["num_images"], mm_token_type_ids=micro["mm_token_type_ids"])
        trl_trainer.current_gradient_accumulation_steps = 2
        trl_loss = trl_trainer._compute_loss(trl_trainer.model, trl_inputs)
        trl_loss.backward()

        settings = grpo_loss.LossSettings(loss_type=case["loss_type"], epsilon_low=0.2, epsilon_high=eps_high,
                                          beta=case.get("beta", 0.0),
                                          importance_sampling_level=case.get("importance_sampling_level", "token"),
                                          max_completion_length=data.max_new_tokens)
        args = TrainingArguments(output_dir=str(scores.parent / "ours"), per_device_train_batch_size=len(rows) // 2,
                                 gradient_accumulation_steps=2, use_cpu=True, bf16=False, report_to=[])
        ours = build_trainer(model=ours_model, processor=loaded.processor, data=data, args=args, settings=settings,
                             mask_truncated_completions=False,
                             top_entropy_quantile=case.get("top_entropy_quantile", 1.0), ref_model=ref)
        ours.current_gradient_accumulation_steps = 2
        ours_model.train()
        our_loss = ours.compute_loss(ours_model, dict(micro), num_items_in_batch=step_tokens)
        our_loss.backward()

        pairs = [(a.grad, b.grad) for a, b in zip(trl_trainer.model.parameters(), ours_model.parameters(), strict=True)]
        assert all((a is None) == (b is None) for a, b in pairs)
        grad_diff = max(float((a - b).abs().max()) for a, b in pairs if a is not None)
        grad_max = max(float(a.abs().max()) for a, _ in pairs if a is not None)
        clipped = ours._metrics.get("clip_ratio/region_mean", ours._metrics.get("cispo_clip_ratio", [0.0]))[0]
        results[json.dumps(case, sort_keys=True)] = (trl_loss.item(), our_loss.item(), grad_diff, grad_max, clipped)
    return results


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_offline_loss_and_gradients_equal_trls(trl_comparison, case):
    trl_loss, our_loss, grad_diff, grad_max, _ = trl_comparison[json.dumps(case, sort_keys=True)]
    print(f"{case}: loss TRL {trl_loss:.8f} rftcli {our_loss:.8f} |diff| {abs(trl_loss - our_loss):.2e}; "
          f"max |grad diff| {grad_diff:.2e} (max |grad| {grad_max:.2e})")
    assert abs(trl_loss - our_loss) < 1e-5
    assert grad_diff < 1e-5 and grad_max > 1e-3  # gradients are there, and equal


def test_the_comparison_can_tell_the_loss_types_apart(trl_comparison):
    """Completion lengths differ and ratios are clipped, so each aggregation gives its own value: a loss
    type computed with another's normaliser would fail the comparison above."""
    token_level = [trl_comparison[json.dumps({"loss_type": t})] for t in ("grpo", "dr_grpo", "dapo", "bnpo")]
    assert len({round(r[0], 7) for r in token_level}) == 4
    assert all(r[4] > 0 for r in token_level)  # some tokens are clipped


# ---------------------------------------------------------------- offline runs

def test_offline_lora_run_moves_the_adapter_and_logs_each_step(tmp_path, scores, tiny_model_dir):
    out = tmp_path / "grpo"
    result = train_grpo.run(train_grpo.Config(rollouts=scores, model=str(tiny_model_dir), out=out, batch_size=8,
                                              max_steps=3, learning_rate=1e-2, logging_steps=1,
                                              mask_truncated_completions=True))
    assert {p.name for p in out.iterdir()} == OUTPUT_FILES
    assert not work_folder(out).exists()
    assert result.mode == "offline" and result.steps == 3 and result.groups == 6 and result.dropped_groups == 0
    assert _lora_b(out) > 0  # LoRA B starts at zero
    manifest = read_checkpoint_manifest(out)
    assert manifest["mode"] == "offline" and manifest["base_model"] == str(tiny_model_dir)
    assert manifest["rewards"] == [{"name": "graded", "weight": 1.0}, {"name": "letters", "weight": 0.5},
                                   {"name": "format", "weight": 0.2}]
    assert manifest["inputs"]["rollouts"]["hash"].startswith("sha256:")
    steps = [e for e in _logged(out) if "loss" in e]
    assert [e["step"] for e in steps] == [1, 2, 3]
    for key in ("rewards/graded/mean", "rewards/graded/std", "rewards/letters/mean", "reward", "reward_std",
                "entropy", "clip_ratio/region_mean", "completions/mean_length", "step_time", "memory/peak_rss_mb"):
        assert all(isinstance(e[key], float) for e in steps), key


def test_offline_full_run_with_kl_moves_every_language_weight(tmp_path, scores, tiny_model_dir):
    from rftcli.loading import load_model

    out = tmp_path / "full"
    train_grpo.run(train_grpo.Config(rollouts=scores, model=str(tiny_model_dir), out=out, full=True, beta=0.1,
                                     batch_size=12, max_steps=2, learning_rate=1e-3, logging_steps=1,
                                     loss_type="grpo", gradient_checkpointing=True))
    before = dict(load_model(str(tiny_model_dir)).model.named_parameters())
    after = dict(load_model(str(out)).model.named_parameters())
    moved = [n for n in before if "language_model" in n and not torch.equal(before[n], after[n])]
    assert len(moved) == len([n for n in before if "language_model" in n])
    steps = [e for e in _logged(out) if "loss" in e]
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-6) and steps[1]["kl"] > 0  # the policy left the reference


def test_offline_qlora_with_kl_trains_on_a_cpu(tmp_path, scores, tiny_model_dir):
    out = tmp_path / "qlora"
    train_grpo.run(train_grpo.Config(rollouts=scores, model=str(tiny_model_dir), out=out, load_in_4bit=True, beta=0.05,
                                     batch_size=12, max_steps=2, learning_rate=1e-2, logging_steps=1))
    weights = load_file(out / ADAPTER)
    assert {v.dtype for v in weights.values()} == {torch.bfloat16} and _lora_b(out) > 0
    assert read_checkpoint_manifest(out)["base_model"] == str(tiny_model_dir)
    assert [e["kl"] > 0 for e in _logged(out) if "loss" in e] == [False, True]


def test_offline_refuses_rollouts_of_another_policy_unless_allowed(tmp_path, scores):
    with pytest.raises(ValueError, match="rollouts come from policy sha256:.* but the model being trained is "
                                         r"builtin:tiny-qwen2.5-vl; .*--allow-policy-mismatch"):
        train_grpo.run(train_grpo.Config(rollouts=scores, model="builtin:tiny-qwen2.5-vl", out=tmp_path / "a"))
    assert not (tmp_path / "a").exists() and not work_folder(tmp_path / "a").exists()
    result = train_grpo.run(train_grpo.Config(rollouts=scores, model="builtin:tiny-qwen2.5-vl", out=tmp_path / "b",
                                              allow_policy_mismatch=True, max_steps=1, batch_size=8))
    assert result.steps == 1
    assert read_checkpoint_manifest(tmp_path / "b")["rollouts"]["policy_hashes"][0].startswith("sha256:")


def test_dynamic_sampling_drops_zero_variance_groups(tmp_path, varied_rollouts, tiny_model_dir, rewards_file):
    flat = tmp_path / "flat.parquet"
    score.run(score.Config(rollouts=varied_rollouts, out=flat, workers=1, rewards=(f"{rewards_file}:flat_on_even_ids",)))
    rows = read_table(flat, "scores").table.to_pylist()
    even = {r["group_index"] for r in rows if r["id"][-1] in "02468"}
    assert 0 < len(even) < 6
    out = tmp_path / "ds"
    cli = runner.invoke(app, ["train-grpo", "--rollouts", str(flat), "-m", str(tiny_model_dir), "--out", str(out),
                              "--dynamic-sampling", "--batch-size", "4", "--epochs", "1", "--logging-steps", "1"])
    assert cli.exit_code == 0, cli.output
    summary = " ".join(cli.output.split())
    assert "mode │ offline" in summary and f"dropped (zero variance) │ {len(even)}" in summary
    manifest = read_checkpoint_manifest(out)
    assert manifest["rollouts"]["groups"] == 6 and manifest["rollouts"]["dropped_groups"] == len(even)
    steps = [e["step"] for e in _logged(out) if "loss" in e]
    assert steps == list(range(1, (6 - len(even)) + 1))  # one pass over the kept 4-completion groups
    without = train_grpo.run(train_grpo.Config(rollouts=flat, model=str(tiny_model_dir), out=tmp_path / "all",
                                               batch_size=4, epochs=1))
    assert without.dropped_groups == 0 and without.steps == 6


def test_offline_refuses_unscored_and_top_p_rollouts(tmp_path, varied_rollouts, scores, tiny_model_dir):
    with pytest.raises(ValueError, match="a rollouts table has no rewards; run `rftcli score`"):
        train_grpo.run(train_grpo.Config(rollouts=varied_rollouts, model=str(tiny_model_dir), out=tmp_path / "a"))
    art = read_table(scores, "scores")
    table = art.table.set_column(art.table.schema.get_field_index("top_p"), "top_p",
                                 pa.array([0.9] * art.table.num_rows, pa.float32()))
    nucleus = tmp_path / "nucleus.parquet"
    write_table(nucleus, "scores", table, art.manifest, reward_names=art.reward_names)
    with pytest.raises(ValueError, match="sampled with top-p/top-k"):
        train_grpo.run(train_grpo.Config(rollouts=nucleus, model=str(tiny_model_dir), out=tmp_path / "b"))


def test_config_refusals(tmp_path, dataset, scores):
    base = dict(model="m", out=tmp_path / "o")
    with pytest.raises(ValueError, match="--dataset .* or --rollouts"):
        train_grpo.Config(dataset=dataset, rollouts=scores, **base)
    with pytest.raises(ValueError, match="--dataset .* or --rollouts"):
        train_grpo.Config(**base)
    with pytest.raises(ValueError, match="dynamic-sampling works offline only"):
        train_grpo.Config(dataset=dataset, dynamic_sampling=True, **base)
    with pytest.raises(ValueError, match="--use-vllm cannot be combined with --load-in-4bit"):
        train_grpo.Config(dataset=dataset, use_vllm=True, load_in_4bit=True, **base)
    with pytest.raises(ValueError, match="multiple of num_iterations"):
        train_grpo.Config(dataset=dataset, save_steps=3, num_iterations=2, **base)
    with pytest.raises(ValueError, match="importance_sampling_level"):
        train_grpo.Config(dataset=dataset, importance_sampling_level="word", **base)
    result = runner.invoke(app, ["train-grpo", "-d", str(dataset), "--rollouts", str(scores), "-m", "m", "--out",
                                 str(tmp_path / "o")])
    assert result.exit_code == 2 and "not both" in result.output


# ---------------------------------------------------------------- online runs

def test_online_run_with_the_newer_settings_moves_the_adapter(tmp_path, dataset, tiny_model_dir, rewards_file):
    out = tmp_path / "online"
    result = train_grpo.run(train_grpo.Config(
        dataset=dataset, model=str(tiny_model_dir), out=out, rewards=(f"{rewards_file}:graded", "format=0.2"),
        num_generations=4, max_completion_length=8, batch_size=8, max_steps=2, learning_rate=1e-2, logging_steps=1,
        limit=8, beta=0.05, importance_sampling_level="sequence", mask_truncated_completions=False,
        top_entropy_quantile=0.5, loss_type="grpo", target_modules="q_proj,v_proj", gradient_checkpointing=True))
    assert result.mode == "online" and result.steps == 2
    weights = load_file(out / ADAPTER)
    assert {k.split(".")[-3] for k in weights if "lora_B" in k} == {"q_proj", "v_proj"}
    assert _lora_b(out) > 0
    steps = [e for e in _logged(out) if "loss" in e]
    assert len(steps) == 2
    for key in ("rewards/graded/mean", "rewards/format/std", "kl", "entropy", "completions/mean_length",
                "step_time", "memory/peak_rss_mb"):
        assert all(key in e for e in steps), key


def test_online_qlora_trains_on_a_cpu(tmp_path, dataset, tiny_model_dir, rewards_file):
    out = tmp_path / "qlora"
    result = train_grpo.run(train_grpo.Config(
        dataset=dataset, model=str(tiny_model_dir), out=out, rewards=(f"{rewards_file}:graded",), num_generations=4,
        max_completion_length=8, batch_size=8, max_steps=2, learning_rate=1e-2, logging_steps=1, limit=8,
        load_in_4bit=True))
    assert result.steps == 2 and _lora_b(out) > 0


# ---------------------------------------------------------------- resume after a kill

def _flags(settings: dict) -> list[str]:
    out = []
    for k, v in settings.items():
        flag = {"learning_rate": "--lr", "rewards": "--reward"}.get(k, "--" + k.replace("_", "-"))
        for item in (v if isinstance(v, tuple) else [v]):
            out += [flag] if v is True else [flag, str(item)]
    return out


@pytest.mark.parametrize("mode", ["offline", "online", "offline-full"])
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, mode, dataset, scores, tiny_model_dir,
                                                          rewards_file):
    common = dict(model=str(tiny_model_dir), max_steps=8, batch_size=8, learning_rate=1e-2, logging_steps=1,
                  save_steps=2, seed=5)
    if mode == "offline-full":  # the model under its Hub names in the checkpoints: loaded converted
        settings = dict(rollouts=scores, full=True, **common)
    elif mode == "offline":
        settings = dict(rollouts=scores, lr_scheduler="cosine", **common)
    else:
        settings = dict(dataset=dataset, rewards=(f"{rewards_file}:graded", "format=0.2"), num_generations=4,
                        max_completion_length=8, limit=16, **common)
    ref = tmp_path / "ref"
    train_grpo.run(train_grpo.Config(out=ref, **settings))
    out = tmp_path / "grpo"
    step = kill_after_checkpoint(["train-grpo", "--out", str(out), *_flags(settings)], work_folder(out))
    assert not out.exists() and 2 <= step < 8
    with pytest.raises(FileExistsError, match="pass --resume to continue it or --overwrite"):
        train_grpo.run(train_grpo.Config(out=out, **settings))
    result = train_grpo.run(train_grpo.Config(out=out, resume=True, **settings))
    assert result.resumed_from == step and result.steps == 8 and not work_folder(out).exists()
    weights = "model.safetensors" if settings.get("full") else ADAPTER
    a, b = load_file(ref / weights), load_file(out / weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def losses(folder):
        return [(e["step"], e["loss"]) for e in _logged(folder) if "loss" in e]

    assert losses(out) == losses(ref) and [s for s, _ in losses(out)] == list(range(1, 9))


# ---------------------------------------------------------------- two processes

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_over_gloo_match_one_with_the_same_global_batch(tmp_path, scores, tiny_model_dir):
    """torchrun with 2 CPU processes of 6 completions each vs one process of 12: the same optimizer steps and
    the same loss at every step (DDP averages gradients; dapo divides by the tokens of all processes)."""
    settings = dict(rollouts=scores, model=str(tiny_model_dir), max_steps=2, learning_rate=1e-2, logging_steps=1,
                    seed=2)
    single = tmp_path / "single"
    train_grpo.run(train_grpo.Config(out=single, batch_size=12, **settings))
    double = tmp_path / "double"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), "-m", "rftcli", "train-grpo", "--out", str(double),
                           "--batch-size", "6", *_flags(settings)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = [(e["step"], e["loss"]) for e in _logged(single) if "loss" in e]
    two = [(e["step"], e["loss"]) for e in _logged(double) if "loss" in e]
    assert read_checkpoint_manifest(double)["world_size"] == 2 and read_checkpoint_manifest(single)["world_size"] == 1
    assert [s for s, _ in two] == [s for s, _ in one] == [1, 2]
    print(f"loss per step, 1 process: {one}; 2 processes: {two}")
    assert all(abs(a - b) < 1e-4 for (_, a), (_, b) in zip(one, two, strict=True)), (one, two)
    a, b = load_file(single / ADAPTER), load_file(double / ADAPTER)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


@pytest.mark.parametrize("name, kind, stage", [("ddp", "MULTI_GPU", None), ("zero2", "DEEPSPEED", 2),
                                               ("zero3", "DEEPSPEED", 3)])
def test_accelerate_recipes_load_and_say_how_to_launch(name, kind, stage):
    """The launcher configs parse as accelerate's own config class (unknown keys fail) and their header
    gives the command."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(__file__).resolve().parent.parent / "recipes" / "accelerate" / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert config.distributed_type.value == kind and config.num_machines == 1
    assert config.deepspeed_config.get("zero_stage") == stage
    assert f"accelerate launch --config_file recipes/accelerate/{name}.yaml" in path.read_text()


def test_the_first_offline_step_holds_the_longest_completion(tmp_path, scores, tiny_model_dir):
    """Offline mode orders like online: the row with the longest prompt and completion comes first."""
    from rftcli.loading import load_model
    from rftcli.ordering import longest_row

    config = train_grpo.Config(rollouts=scores, model=str(tiny_model_dir), out=tmp_path / "out", batch_size=4,
                               max_steps=1, seed=0, allow_policy_mismatch=True)
    _, build, _ = train_grpo._offline_trainer(config, tmp_path / "work", "any")
    trainer = build(load_model(str(tiny_model_dir), dtype="float32"))
    torch.manual_seed(0)
    order = list(trainer._get_train_sampler())
    torch.manual_seed(0)
    base = list(type(trainer)._get_train_sampler(trainer))  # the same draw without worst-first
    longest = longest_row(trainer.train_dataset.rows, str(tiny_model_dir))
    assert order[0] == longest and base[0] != longest
    assert order == [{base[0]: longest, longest: base[0]}.get(i, i) for i in base]  # one swap, nothing else
