"""train-grpo under `accelerate launch` with the DeepSpeed recipes, for real, on 2 CPU processes (DeepSpeed's
CPU accelerator over gloo, fp32): the same optimizer steps and losses as one process with the same global
batch, a DeepSpeed engine of the recipe's ZeRO stage doing the training, and a checkpoint that loads.

The first run on a machine JIT-compiles DeepSpeed's shared-memory comm op (g++ and ninja, 34 s alone on 2 cores;
cached in ~/.cache/torch_extensions after)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from rftcli.manifest import read_checkpoint_manifest
from rftcli.stages import train_grpo

from .test_train_grpo import ADAPTER, _flags, _free_port, _logged, rewards_file, scores, varied_rollouts  # noqa: F401

pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")

pytestmark = pytest.mark.slow
RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "accelerate"
# Runs rftcli after wrapping Trainer.train to record, per process, what wrapped the model and its ZeRO stage.
PROBE = '''
import json, os, sys
import transformers
from rftcli.cli import app

train = transformers.Trainer.train

def recorded(self, *args, **kwargs):
    out = train(self, *args, **kwargs)
    engine = self.model_wrapped
    stage = engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None
    path = os.path.join(os.environ["PROBE_DIR"], f"engine-{os.environ['RANK']}.json")
    with open(path, "w") as fh:
        json.dump({"engine": type(engine).__name__, "zero_stage": stage}, fh)
    return out

transformers.Trainer.train = recorded
sys.argv = ["rftcli", *sys.argv[1:]]
app()
'''
# ZeRO-3 as a model of real size runs it: DeepSpeed keeps every weight under 1e5 elements whole on each process
# (stage3_param_persistence_threshold), which is all of the tiny model's, so zero3.yaml never shards its weights.
SHARDED_ZERO3 = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
                 "gradient_clipping": "auto",
                 "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,
                                       "stage3_gather_16bit_weights_on_model_save": True}}


def _launch(tmp_path: Path, config: Path, out: Path, settings: dict, *extra: str, stage: str = "train-grpo",
            batch_size: int = 6) -> list[dict]:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROBE_DIR": str(probe_dir)}
    # --mixed_precision no: the recipes say bf16 for GPUs; on a CPU DeepSpeed trains in fp32, as one process does.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2",
           "--mixed_precision", "no", "--main_process_port", str(_free_port()), str(probe), stage,
           "--out", str(out), "--batch-size", str(batch_size), *_flags(settings), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((probe_dir / f"engine-{r}.json").read_text()) for r in (0, 1)]


def _compare(single: Path, double: Path) -> None:
    one = [(e["step"], e["loss"]) for e in _logged(single) if "loss" in e]
    two = [(e["step"], e["loss"]) for e in _logged(double) if "loss" in e]
    assert read_checkpoint_manifest(double)["world_size"] == 2
    assert [s for s, _ in two] == [s for s, _ in one] == [1, 2]
    print(f"loss per step, 1 process: {one}; 2 processes: {two}")
    assert all(abs(a - b) < 1e-4 for (_, a), (_, b) in zip(one, two, strict=True)), (one, two)


@pytest.fixture(scope="module")
def settings(scores, tiny_model_dir):  # noqa: F811 (the fixture imported above)
    return dict(rollouts=scores, model=str(tiny_model_dir), max_steps=2, learning_rate=1e-2, logging_steps=1, seed=2)


@pytest.fixture(scope="module")
def single_lora(tmp_path_factory, settings) -> Path:
    out = tmp_path_factory.mktemp("single") / "lora"
    train_grpo.run(train_grpo.Config(out=out, batch_size=12, **settings))
    return out


def _check_adapter(single: Path, double: Path) -> None:
    from rftcli.loading import load_model

    a, b = load_file(single / ADAPTER), load_file(double / ADAPTER)
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape for k in a), {k: tuple(b[k].shape) for k in b}
    assert max(float((a[k] - b[k]).detach().abs().max()) for k in a) < 1e-4
    # The checkpoint loads on its base model; merged in, it gives the weights the one-process adapter gives.
    one, two = (dict(load_model(str(d), merge_adapter=True).model.named_parameters()) for d in (single, double))
    assert one.keys() == two.keys() and max(float((one[k] - two[k]).detach().abs().max()) for k in one) < 1e-4


@pytest.mark.parametrize("recipe, stage", [("zero2", 2), ("zero3", 3)])
def test_lora_under_a_deepspeed_recipe_matches_one_process(tmp_path, settings, single_lora, recipe, stage):
    double = tmp_path / "double"
    engines = _launch(tmp_path, RECIPES / f"{recipe}.yaml", double, settings)
    assert engines == [{"engine": "DeepSpeedEngine", "zero_stage": stage}] * 2
    _compare(single_lora, double)
    _check_adapter(single_lora, double)


def test_full_training_under_zero2_matches_one_process(tmp_path, settings):
    from rftcli.loading import load_model

    full = {**settings, "learning_rate": 1e-3}
    single = tmp_path / "single"
    train_grpo.run(train_grpo.Config(out=single, batch_size=12, full=True, **full))
    double = tmp_path / "double"
    engines = _launch(tmp_path, RECIPES / "zero2.yaml", double, full, "--full")
    assert engines == [{"engine": "DeepSpeedEngine", "zero_stage": 2}] * 2
    _compare(single, double)
    a = dict(load_model(str(single)).model.named_parameters())
    b = dict(load_model(str(double)).model.named_parameters())
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).detach().abs().max()) for k in a) < 1e-4


def _sharded_zero3(tmp_path: Path) -> Path:
    ds_config = tmp_path / "ds.json"
    ds_config.write_text(json.dumps(SHARDED_ZERO3))
    config = tmp_path / "zero3_sharded.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\nnum_machines: 1\n"
                      f"num_processes: 2\ndeepspeed_config:\n  deepspeed_config_file: {ds_config}\n"
                      "  zero3_init_flag: true\n")
    return config


def test_lora_under_zero3_with_sharded_weights_saves_the_whole_adapter(tmp_path, settings, single_lora):
    """Each process holds a shard of every weight: the adapter is gathered before the main process saves it."""
    double = tmp_path / "double"
    engines = _launch(tmp_path, _sharded_zero3(tmp_path), double, settings)
    assert engines == [{"engine": "DeepSpeedEngine", "zero_stage": 3}] * 2
    _compare(single_lora, double)  # the training itself matches
    _check_adapter(single_lora, double)


def test_full_training_with_kl_under_zero3_with_sharded_weights(tmp_path, settings):
    """--full --beta > 0 with sharded weights: the reference model is loaded sharded (a copy of the sharded policy
    would be empty), the KL matches one process, and the saved model has the one-process names and values."""
    from safetensors import safe_open

    full = {**settings, "learning_rate": 1e-3, "beta": 0.1}
    single = tmp_path / "single"
    train_grpo.run(train_grpo.Config(out=single, batch_size=12, full=True, **full))
    double = tmp_path / "double"
    engines = _launch(tmp_path, _sharded_zero3(tmp_path), double, full, "--full")
    assert engines == [{"engine": "DeepSpeedEngine", "zero_stage": 3}] * 2
    _compare(single, double)
    kl = [[e["kl"] for e in _logged(d) if "loss" in e] for d in (single, double)]
    assert kl[1][1] > 0 and all(abs(a - b) < 1e-6 for a, b in zip(*kl, strict=True)), kl
    tensors = []
    for d in (single, double):
        with safe_open(str(d / "model.safetensors"), "pt") as fh:
            tensors.append({k: fh.get_tensor(k) for k in fh.keys()})  # noqa: SIM118 (safe_open has no iteration)
    a, b = tensors
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


def test_sft_lora_under_zero3_with_sharded_weights_matches_one_process(tmp_path, dataset, tiny_model_dir):
    """sft-coldstart gathers the sharded adapter too, and writes it once, from the main process."""
    from rftcli.stages import sft_coldstart

    settings = dict(dataset=dataset, model=str(tiny_model_dir), max_steps=2, learning_rate=1e-2, logging_steps=1,
                    lora_dropout=0.0, seed=0)
    single = tmp_path / "single"
    sft_coldstart.run(sft_coldstart.Config(out=single, batch_size=4, **settings))
    double = tmp_path / "double"
    engines = _launch(tmp_path, _sharded_zero3(tmp_path), double, settings, stage="sft-coldstart", batch_size=2)
    assert engines == [{"engine": "DeepSpeedEngine", "zero_stage": 3}] * 2
    _compare(single, double)
    _check_adapter(single, double)
