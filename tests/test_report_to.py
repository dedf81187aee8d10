"""`--report-to tensorboard|wandb`: the steps in metrics.jsonl also reach TensorBoard's event files and a W&B run
(offline mode, read back from its `.wandb` log), for sft-coldstart and both train-grpo modes."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import pytest

from rftcli.stages import rollout, score, sft_coldstart, train_grpo
from rftcli.training import work_folder

from .conftest import kill_after_checkpoint

LOGGED = ("loss", "learning_rate", "grad_norm")


def _steps(folder: Path) -> dict[int, dict]:
    entries = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {e["step"]: e for e in entries if "loss" in e}


def _tensorboard_scalars(runs: Path) -> dict[int, dict]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    events = EventAccumulator(str(run))
    events.Reload()
    by_step: dict[int, dict] = {}
    for tag in events.Tags()["scalars"]:
        for event in events.Scalars(tag):
            by_step.setdefault(event.step, {})[tag.removeprefix("train/")] = event.value
    return by_step


def _wandb_history(run_file: Path) -> tuple[str, list[dict]]:
    """The run's name and history rows, from W&B's record log: a 7-byte header, then 32 KiB blocks of
    chunks (crc32, length, type: full/first/middle/last) holding `Record` protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos, block = [], b"", 7, 32 * 1024
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(pending)
    name, history = None, []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "run":
            name = record.run.display_name
        elif record.WhichOneof("record_type") == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return name, history


def _assert_same(logged: dict[int, dict], reported: dict[int, dict]) -> None:
    assert set(logged) <= set(reported)
    for step, entry in logged.items():
        for key in LOGGED:
            assert reported[step][key] == pytest.approx(entry[key], rel=1e-6, abs=1e-9), (step, key)


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B in offline mode, writing under this test's folder. wandb keeps its settings (the folder among them)
    in a process-wide singleton from the first run on: torn down around each test, it reads them anew."""
    wandb = pytest.importorskip("wandb")
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.delenv("WANDB_RESUME", raising=False)
    wandb.teardown()
    yield tmp_path / "wandb"
    wandb.teardown()


@pytest.fixture(scope="module")
def scores(tmp_path_factory, dataset, tiny_model_dir) -> Path:
    folder = tmp_path_factory.mktemp("report")
    rollouts = folder / "rollouts.parquet"
    rollout.run(rollout.Config(dataset=dataset, model=str(tiny_model_dir), out=rollouts, num_generations=4,
                               max_new_tokens=6, limit=6, batch_size=8, seed=0), progress=False)
    out = folder / "scores.parquet"
    score.run(score.Config(rollouts=rollouts, out=out, workers=1, rewards=("accuracy", "format=0.2")))
    return out


def test_offline_grpo_reports_its_steps_to_tensorboard(tmp_path, scores, tiny_model_dir):
    out = tmp_path / "grpo"
    train_grpo.run(train_grpo.Config(rollouts=scores, model=str(tiny_model_dir), out=out, batch_size=8,
                                     max_steps=3, learning_rate=1e-2, logging_steps=1, report_to="tensorboard"))
    reported = _tensorboard_scalars(out / "runs")
    _assert_same(_steps(out), reported)
    assert sorted(_steps(out)) == [1, 2, 3]
    assert {"reward", "rewards/accuracy/mean", "entropy", "clip_ratio/region_mean"} <= set(reported[3])


def test_sft_reports_its_steps_to_tensorboard(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "sft"
    sft_coldstart.run(sft_coldstart.Config(dataset=dataset, model=str(tiny_model_dir), out=out, max_steps=2,
                                           batch_size=4, logging_steps=1, limit=8, report_to="tensorboard"))
    _assert_same(_steps(out), _tensorboard_scalars(out / "runs"))
    assert sorted(_steps(out)) == [1, 2]


def test_online_grpo_reports_its_steps_to_an_offline_wandb_run(tmp_path, dataset, tiny_model_dir, offline_wandb):
    out = tmp_path / "online"
    train_grpo.run(train_grpo.Config(dataset=dataset, model=str(tiny_model_dir), out=out, num_generations=4,
                                     max_completion_length=6, batch_size=8, max_steps=2, logging_steps=1, limit=8,
                                     report_to="wandb"))
    (run_file,) = offline_wandb.glob("offline-run-*/run-*.wandb")
    name, history = _wandb_history(run_file)
    assert name == "online"  # the run is named after --out
    reported = {int(row["train/global_step"]): {k.removeprefix("train/"): v for k, v in row.items()}
                for row in history if "train/loss" in row}
    _assert_same(_steps(out), reported)
    assert sorted(reported) == [1, 2]
    import wandb

    assert wandb.run is None  # the stage ended the run it started: the next one gets its own


@pytest.mark.parametrize("backend", ["tensorboard", "wandb"])
def test_a_missing_backend_is_named_before_anything_loads(tmp_path, scores, monkeypatch, backend):
    monkeypatch.setitem(sys.modules, backend, None)  # find_spec answers None: as if not installed
    with pytest.raises(ImportError, match=rf"--report-to {backend} needs the {backend} package \(pip install"):
        train_grpo.run(train_grpo.Config(rollouts=scores, model="no/such-model", out=tmp_path / "o",
                                         report_to=backend))
    assert not (tmp_path / "o").exists()


def test_a_resumed_run_logs_into_the_wandb_run_it_started(tmp_path, scores, tiny_model_dir, offline_wandb):
    """Killed after its first checkpoint and resumed, a run keeps its W&B id (kept in the work folder): both
    processes' offline runs carry it, and the resumed one logs the steps after the checkpoint."""
    settings = dict(rollouts=scores, model=str(tiny_model_dir), batch_size=8, max_steps=4, save_steps=2,
                    learning_rate=1e-2, logging_steps=1, report_to="wandb")
    out = tmp_path / "grpo"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items() if k != "learning_rate"]
    step = kill_after_checkpoint(["train-grpo", "--out", str(out), "--lr=1e-2", *flags], work_folder(out))
    run_id = (work_folder(out) / "wandb_run_id").read_text().strip()
    train_grpo.run(train_grpo.Config(out=out, resume=True, **settings))
    # Both processes' runs carry the one id (two folders, or one when both started within the same second).
    runs = sorted(offline_wandb.glob("offline-run-*"))
    assert runs and all(r.name.endswith(f"-{run_id}") for r in runs), runs
    logged = {int(row["train/global_step"]) for run in runs for run_file in run.glob("run-*.wandb")
              for row in _wandb_history(run_file)[1] if "train/loss" in row}
    assert set(range(step + 1, 5)) <= logged
    assert "WANDB_RUN_ID" not in os.environ  # set for the run only
