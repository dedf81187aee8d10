"""What sft-coldstart and train-grpo show while they run: the step counter (a rich bar on a terminal,
plain lines elsewhere) and `<out>.work/metrics.jsonl`, which holds each logged step while the run is
still going, and after a resume holds only the checkpoint's steps before the new ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import rftcli.training
from rftcli.cli import app
from rftcli.stages import score, sft_coldstart, train_grpo
from rftcli.training import work_folder

from .conftest import TINY

runner = CliRunner()
SFT = dict(model=TINY, max_steps=4, batch_size=4, learning_rate=1e-2, logging_steps=1, lora_dropout=0.0)


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


class Stop(Exception):
    """Raised by a test callback to end a run at a chosen step, as a crash would."""


def _watch(monkeypatch, at_step: int, seen: list, stop: bool = False) -> None:
    """After the stage attaches its progress callback, add one that, at the end of optimizer step `at_step`
    (before that step is logged), records what `<out>.work/metrics.jsonl` holds and whether the output
    exists; with `stop`, then ends the run."""
    from transformers import TrainerCallback

    attach = rftcli.training.attach_progress

    class Reader(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == at_step:
                work = Path(args.output_dir)
                out = work.with_name(work.name.removesuffix(".work"))
                seen.append((_steps(work / "metrics.jsonl"), out.exists()))
                if stop:
                    raise Stop(f"stopped at step {at_step}")

    def watched(trainer, label):
        attach(trainer, label)
        trainer.add_callback(Reader())

    monkeypatch.setattr(rftcli.training, "attach_progress", watched)


def test_sft_metrics_jsonl_grows_while_the_run_goes(monkeypatch, tmp_path, dataset):
    seen: list = []
    _watch(monkeypatch, 3, seen)
    out = tmp_path / "sft"
    sft_coldstart.run(sft_coldstart.Config(dataset=dataset, out=out, **SFT))
    assert seen == [([1, 2], False)]  # steps 1 and 2 on disk mid-run, the output not yet written
    final = (out / "metrics.jsonl").read_text().splitlines()
    assert _steps(out / "metrics.jsonl")[:4] == [1, 2, 3, 4]
    assert "train_runtime" in json.loads(final[-1])  # the closing summary, as before
    assert not work_folder(out).exists()


def test_online_grpo_metrics_jsonl_grows_while_the_run_goes(monkeypatch, tmp_path, dataset, tiny_model_dir):
    seen: list = []
    _watch(monkeypatch, 2, seen)
    out = tmp_path / "grpo"
    train_grpo.run(train_grpo.Config(dataset=dataset, model=str(tiny_model_dir), out=out, rewards=("format=1",),
                                     num_generations=2, max_completion_length=6, batch_size=4, max_steps=3,
                                     learning_rate=1e-2, logging_steps=1, limit=4))
    assert seen == [([1], False)]
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["step"] == 1 and "reward" in row and "loss" in row


def test_offline_grpo_metrics_jsonl_grows_while_the_run_goes(monkeypatch, tmp_path, rollouts, tiny_model_dir):
    scores = tmp_path / "scores.parquet"
    score.run(score.Config(rollouts=rollouts, out=scores, workers=1, rewards=("accuracy", "format=0.2")))
    seen: list = []
    _watch(monkeypatch, 2, seen)
    out = tmp_path / "grpo"
    train_grpo.run(train_grpo.Config(rollouts=scores, model=str(tiny_model_dir), out=out, batch_size=6, max_steps=3,
                                     learning_rate=1e-2, logging_steps=1))
    assert seen == [([1], False)]
    assert _steps(out / "metrics.jsonl")[:3] == [1, 2, 3]


def test_a_resumed_run_rewrites_the_live_metrics_from_its_checkpoint(monkeypatch, tmp_path, dataset):
    """A run crashed at step 3 logged steps 1-3, its checkpoint is step 2: resumed, the live file holds steps
    1 and 2 once each when step 3 is taken again, and the output's file equals an uninterrupted run's."""
    settings = dict(SFT, save_steps=2)
    out = tmp_path / "sft"
    seen: list = []
    with monkeypatch.context() as m:
        _watch(m, 3, seen, stop=True)
        with pytest.raises(Stop):
            sft_coldstart.run(sft_coldstart.Config(dataset=dataset, out=out, **settings))
    assert seen == [([1, 2], False)]
    (work_folder(out) / "metrics.jsonl").open("a").write(json.dumps({"loss": 9.9, "step": 3}) + "\n")  # logged, lost

    seen.clear()
    _watch(monkeypatch, 3, seen)
    sft_coldstart.run(sft_coldstart.Config(dataset=dataset, out=out, resume=True, **settings))
    assert seen == [([1, 2], False)]
    reference = tmp_path / "reference"
    sft_coldstart.run(sft_coldstart.Config(dataset=dataset, out=reference, **settings))

    def losses(folder: Path) -> list:
        return [(e["step"], e["loss"]) for e in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
                if "loss" in e]

    assert losses(out) == losses(reference) and len(losses(out)) == 4


def test_progress_lines_off_a_terminal_show_the_step_counter(monkeypatch, tmp_path, dataset):
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    out = tmp_path / "sft"
    result = runner.invoke(app, ["sft-coldstart", "-d", str(dataset), "-m", TINY, "--max-steps", "4",
                                 "--batch-size", "4", "--logging-steps", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"sft: 4 steps; metrics as they are logged: {work_folder(out) / 'metrics.jsonl'}" in result.output
    lines = re.findall(r"^sft step (\d+)/4  elapsed \d+:\d\d:\d\d  ETA \d+:\d\d:\d\d  loss [\d.]+$", result.output,
                       re.MULTILINE)
    assert lines == ["2", "4"], result.output


def test_progress_bar_on_a_terminal_shows_steps_elapsed_eta_and_reward(monkeypatch, tmp_path, rollouts,
                                                                        tiny_model_dir):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    scores = tmp_path / "scores.parquet"
    score.run(score.Config(rollouts=rollouts, out=scores, workers=1, rewards=("accuracy", "format=0.2")))
    result = runner.invoke(app, ["train-grpo", "--rollouts", str(scores), "-m", str(tiny_model_dir), "--max-steps",
                                 "3", "--batch-size", "6", "--logging-steps", "1", "--beta", "0.1", "--out",
                                 str(tmp_path / "grpo")])
    assert result.exit_code == 0, result.output
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.output)
    assert re.search(r"grpo \S* ?3/3 steps \d+:\d\d:\d\d ETA \d+:\d\d:\d\d loss \S+  reward \S+  kl \S+", plain), plain
    assert "grpo step" not in plain  # no plain lines beside the bar
