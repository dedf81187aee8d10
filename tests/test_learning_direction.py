"""Training moves its objective the right way, and a sign-flipped control moves it the other way.

"Parameters changed" would also hold for a run that climbs the wrong way. These tests measure the objective
itself before and after a short run, on samples the run did not use, and run the same thing again with the
sign of the learning signal flipped; the flipped run must move the measure the other way, so a sign error
anywhere between the reward and the update (advantages, loss, its aggregation) fails a test here.

- Online GRPO (TRL's GRPOTrainer as train-grpo runs it) and offline GRPO (train-grpo on a scored rollouts
  table) on `spaces`, a graded reward a random model can move (the share of characters that are spaces;
  a pass/fail reward gives a random model no signal at all). The measure: the mean reward of fresh samples
  (another seed, more samples per prompt) from the start model and from the trained one.
- SFT (sft-coldstart): the loss on held-out rows (the test split), against the start model's (the same run
  at learning rate 0).

The flips are test hooks on the real code paths, not user options: online, TRL computes advantages inside
`GRPOTrainer._generate_and_score_completions` and hands them to its loss in that method's output, so the
hook negates them there; offline, `rftcli.grpo_loss.group_advantages`; SFT, the training loss TRL's
`SFTTrainer.compute_loss` returns (evaluation stays unflipped, so the held-out loss is measured as usual).
The tiny model's output layer is part of what must move (its random logits are nearly flat), so the GRPO
runs train all weights; completions are 4 tokens, which keeps credit assignment sharp and the runs short.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trl

from rftcli import grpo_loss
from rftcli.schema import read_table
from rftcli.stages import rollout, score, sft_coldstart, train_grpo

from .conftest import TINY

REWARD = "tests.test_learning_direction:spaces"
TOKENS = 4
"""Completion length in every GRPO run and measurement."""
MARGIN = 0.03
"""Smallest change of the mean reward (a share, 0..1) that counts as moved."""


def spaces(completions, **columns):
    """Share of the completion's characters that are spaces: graded, so a random policy's samples differ."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [t.count(" ") / max(len(t), 1) for t in texts]


def _sample_and_score(dataset: Path, model: str, out: Path, *, seed: int, prompts: int, per_prompt: int) -> Path:
    samples = out.with_suffix(".rollouts.parquet")
    rollout.run(rollout.Config(dataset=dataset, model=model, out=samples, num_generations=per_prompt,
                               max_new_tokens=TOKENS, limit=prompts, batch_size=16, seed=seed), progress=False)
    score.run(score.Config(rollouts=samples, out=out, rewards=(REWARD,), workers=1))
    return out


def mean_reward(dataset: Path, model: str, out: Path) -> float:
    """Mean reward of fresh samples: 24 prompts x 8, under a seed no training run here samples with."""
    scored = _sample_and_score(dataset, model, out, seed=99, prompts=24, per_prompt=8)
    values = read_table(scored, "scores").table["reward_spaces"].to_pylist()
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def start_reward(dataset, tmp_path_factory) -> float:
    return mean_reward(dataset, TINY, tmp_path_factory.mktemp("start") / "scores.parquet")


@pytest.fixture(scope="module")
def training_scores(dataset, tmp_path_factory) -> Path:
    """The offline runs' data: 24 prompts x 4 samples from the start model, scored."""
    return _sample_and_score(dataset, TINY, tmp_path_factory.mktemp("offline") / "scores.parquet",
                             seed=1, prompts=24, per_prompt=4)


def flip_online(monkeypatch) -> None:
    make_batch = trl.GRPOTrainer._generate_and_score_completions

    def negated(self, inputs):
        batch = make_batch(self, inputs)
        batch["advantages"] = -batch["advantages"]
        return batch

    monkeypatch.setattr(trl.GRPOTrainer, "_generate_and_score_completions", negated)


def flip_offline(monkeypatch) -> None:
    advantages_of = grpo_loss.group_advantages

    def negated(*args, **kwargs):
        advantages, zero_std = advantages_of(*args, **kwargs)
        return -advantages, zero_std

    monkeypatch.setattr(grpo_loss, "group_advantages", negated)


def flip_sft(monkeypatch) -> None:
    loss_of = trl.SFTTrainer.compute_loss

    def negated(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = loss_of(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if not model.training:
            return out
        return (-out[0], *out[1:]) if return_outputs else -out

    monkeypatch.setattr(trl.SFTTrainer, "compute_loss", negated)


def _online(dataset: Path, out: Path) -> Path:
    train_grpo.run(train_grpo.Config(dataset=dataset, model=TINY, out=out, rewards=(REWARD,), full=True,
                                     num_generations=4, max_completion_length=TOKENS, batch_size=8, max_steps=16,
                                     learning_rate=5e-2, logging_steps=1, limit=12, seed=0))
    return out


def _offline(scores: Path, out: Path) -> Path:
    # 96 completions, 2 batches of 48, 4 passes: 8 steps, the later ones off-policy within the clip range.
    train_grpo.run(train_grpo.Config(rollouts=scores, model=TINY, out=out, full=True, batch_size=48, epochs=4,
                                     learning_rate=5e-2, logging_steps=1, seed=0))
    return out


@pytest.mark.parametrize("flipped", [False, True], ids=["as-is", "sign-flipped"])
def test_online_grpo_moves_the_reward(dataset, tmp_path, start_reward, monkeypatch, flipped):
    if flipped:
        flip_online(monkeypatch)
    trained = _online(dataset, tmp_path / "grpo")
    after = mean_reward(dataset, str(trained), tmp_path / "after.parquet")
    print(f"online GRPO{' (sign flipped)' if flipped else ''}: reward {start_reward:.3f} -> {after:.3f}")
    if flipped:
        assert after < start_reward - MARGIN, f"sign-flipped online GRPO: reward {start_reward:.3f} -> {after:.3f}"
    else:
        assert after > start_reward + MARGIN, f"online GRPO: reward {start_reward:.3f} -> {after:.3f}"


@pytest.mark.parametrize("flipped", [False, True], ids=["as-is", "sign-flipped"])
def test_offline_grpo_moves_the_reward(dataset, tmp_path, start_reward, training_scores, monkeypatch, flipped):
    if flipped:
        flip_offline(monkeypatch)
    trained = _offline(training_scores, tmp_path / "grpo")
    after = mean_reward(dataset, str(trained), tmp_path / "after.parquet")
    print(f"offline GRPO{' (sign flipped)' if flipped else ''}: reward {start_reward:.3f} -> {after:.3f}")
    if flipped:
        assert after < start_reward - MARGIN, f"sign-flipped offline GRPO: reward {start_reward:.3f} -> {after:.3f}"
    else:
        assert after > start_reward + MARGIN, f"offline GRPO: reward {start_reward:.3f} -> {after:.3f}"


def _sft_eval_loss(dataset: Path, out: Path, learning_rate: float) -> float:
    result = sft_coldstart.run(sft_coldstart.Config(dataset=dataset, model=TINY, out=out, max_steps=6, batch_size=4,
                                                    learning_rate=learning_rate, eval_split="test", seed=0))
    return result.eval_loss


@pytest.fixture(scope="module")
def start_loss(dataset, tmp_path_factory) -> float:
    """The start model's held-out loss: the same SFT run at learning rate 0 (it changes no weight)."""
    return _sft_eval_loss(dataset, tmp_path_factory.mktemp("sft") / "still", 0.0)


@pytest.mark.parametrize("flipped", [False, True], ids=["as-is", "sign-flipped"])
def test_sft_moves_held_out_loss(dataset, tmp_path, start_loss, monkeypatch, flipped):
    if flipped:
        flip_sft(monkeypatch)
    after = _sft_eval_loss(dataset, tmp_path / "sft", 1e-2)
    print(f"SFT{' (sign flipped)' if flipped else ''}: held-out loss {start_loss:.3f} -> {after:.3f}")
    if flipped:
        assert after > start_loss + 0.1, f"sign-flipped SFT: held-out loss {start_loss:.3f} -> {after:.3f}"
    else:
        assert after < start_loss - 0.1, f"SFT: held-out loss {start_loss:.3f} -> {after:.3f}"
