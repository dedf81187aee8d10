"""Shared fixtures: the tiny built-in model and a small counting dataset, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = "builtin:tiny-qwen2.5-vl"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny model saved to a local folder, so tests also exercise loading from a path."""
    from rftcli import tiny_model

    return tiny_model.build(TINY, tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    from rftcli.stages import prepare_data

    out = tmp_path_factory.mktemp("data") / "counting.parquet"
    prepare_data.run(prepare_data.Config(out=out, task="counting", num=48, test_fraction=0.25))
    return out


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    """The tiny model loaded through rftcli's loader, in eval mode (one per test module)."""
    from rftcli.loading import load_model

    m = load_model(str(tiny_model_dir), dtype="float32")
    m.model.eval()
    return m


@pytest.fixture(scope="session")
def rollouts(tmp_path_factory, dataset, tiny_model_dir) -> Path:
    from rftcli.stages import rollout

    out = tmp_path_factory.mktemp("rollouts") / "rollouts.parquet"
    rollout.run(rollout.Config(dataset=dataset, model=str(tiny_model_dir), out=out, num_generations=3,
                               max_new_tokens=8, limit=6, batch_size=4, seed=1), progress=False)
    return out


@pytest.fixture(scope="session")
def sft_adapter(tmp_path_factory, dataset) -> Path:
    from rftcli.stages import sft_coldstart

    out = tmp_path_factory.mktemp("ckpt") / "sft"
    sft_coldstart.run(sft_coldstart.Config(dataset=dataset, model=TINY, out=out, max_steps=4, batch_size=4,
                                           learning_rate=1e-2, logging_steps=1))
    return out


def kill_after_checkpoint(args: list[str], work: Path) -> int:
    """Run `rftcli ARGS` in a child process, SIGKILL it once a checkpoint in `work` is complete; return the
    checkpoint's step. The child gets this process's thread count: a different one changes float sums."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    from rftcli.training import latest_checkpoint

    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "rftcli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if work.is_dir() and latest_checkpoint(work) is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    return int(latest_checkpoint(work).name.removeprefix("checkpoint-"))


def kill_once_shards(cmd: list[str], parts: Path, count: int, env: dict[str, str]) -> None:
    """Run `cmd` in a child process and SIGKILL it once `parts` holds `count` finished shards."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(list(parts.glob("part-*.parquet"))) < count:
        assert proc.poll() is None, f"it ended before it could be killed: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "no shards appeared"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
