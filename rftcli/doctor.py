"""What this machine offers rftcli, for bug reports: `rftcli doctor` (a table) or `rftcli doctor --json`.

`report()` returns a plain dict:

    versions     python, rftcli and each library rftcli uses (None when not installed)
    devices      CUDA devices (name, memory in GiB) or the CPU with its core count
    bitsandbytes whether 4-bit (NF4) layers run here: a 64x64 layer is quantized and run, not assumed
    vllm         installed or not, and whether `rollout --backend vllm` could use it (it needs CUDA)
    torchvision  installed and importable, or why not (rftcli then loads processors without it)
    defaults     what `--dtype auto`, the model device and `rollout --backend` would use
    storage      the Hugging Face cache folder (where hub models download to: HF_HOME, HF_HUB_CACHE) and
                 the working folder, each with its free disk space in GiB

Nothing here changes state; a check that fails is reported as text, never raised.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

from rftcli import __version__

LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "pyarrow", "bitsandbytes", "vllm",
             "torchvision", "deepspeed", "tensorboard", "wandb", "matplotlib")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _short(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def devices() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        cards = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            cards.append({"index": i, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                          "bf16": torch.cuda.is_bf16_supported()})
        return {"kind": "cuda", "count": len(cards), "cuda": torch.version.cuda, "gpus": cards}
    return {"kind": "cpu", "count": 0, "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def bitsandbytes_4bit(device: str) -> dict[str, Any]:
    """Quantize and run one small NF4 layer on `device`: the import alone does not say the kernels work."""
    if _version("bitsandbytes") is None:
        return {"available": False, "reason": "not installed (pip install bitsandbytes)"}
    try:
        import bitsandbytes as bnb
        import torch

        layer = bnb.nn.Linear4bit(64, 64, bias=False, quant_type="nf4", compute_dtype=torch.float32)
        layer = layer.to(device)
        with torch.no_grad():
            out = layer(torch.ones(1, 64, device=device))
        if out.shape != (1, 64) or not torch.isfinite(out).all():
            return {"available": False, "reason": "a 4-bit layer ran but gave non-finite output"}
    except Exception as err:  # any failure means 4-bit loading will not work here
        return {"available": False, "reason": _short(err)}
    return {"available": True, "reason": f"NF4 layer ran on {device}"}


def vllm_status(cuda: bool) -> dict[str, Any]:
    version = _version("vllm")
    if version is None:
        return {"installed": False, "usable": False, "reason": "not installed (pip install vllm)"}
    if not cuda:
        return {"installed": True, "usable": False, "reason": "installed, but vLLM needs a CUDA GPU"}
    return {"installed": True, "usable": True, "reason": f"vllm {version} with CUDA"}


def torchvision_status() -> dict[str, Any]:
    if _version("torchvision") is None:
        return {"available": False, "reason": "not installed; processors load without video sub-processors"}
    try:
        import torchvision  # noqa: F401
    except Exception as err:  # e.g. a CUDA-only wheel on a CPU machine
        return {"available": False, "reason": f"installed but fails to import ({_short(err)})"}
    return {"available": True, "reason": "imports"}


def defaults() -> dict[str, str]:
    from rftcli.loading import _dtype, default_device
    from rftcli.stages.rollout import Config as RolloutConfig

    backend = RolloutConfig.__dataclass_fields__["backend"].default
    return {"dtype_auto": str(_dtype("auto")).removeprefix("torch."), "device": default_device(),
            "rollout_backend": backend}


def free_gib(path: str) -> float | None:
    """Free disk space where `path` is (or would be created: its nearest existing parent), in GiB."""
    import shutil

    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        return round(shutil.disk_usage(probe).free / 2**30, 1)
    except OSError:
        return None


def storage() -> dict[str, Any]:
    from huggingface_hub import constants

    cache = constants.HF_HUB_CACHE
    return {"hf_cache": cache, "hf_cache_free_gib": free_gib(cache), "workdir": os.getcwd(),
            "workdir_free_gib": free_gib(os.getcwd())}


def report() -> dict[str, Any]:
    """Versions, devices and what rftcli would use here; see the module docstring for each key."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "rftcli": __version__}
    versions.update({name: _version(name) for name in LIBRARIES})
    dev = devices()
    cuda = dev["kind"] == "cuda"
    return {
        "versions": versions,
        "platform": platform.platform(),
        "devices": dev,
        "bitsandbytes": bitsandbytes_4bit("cuda" if cuda else "cpu"),
        "vllm": vllm_status(cuda),
        "torchvision": torchvision_status(),
        "defaults": defaults(),
        "storage": storage(),
    }


def rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, value) lines of `report()` for a two-column table."""
    out = [(name, version or "not installed") for name, version in info["versions"].items()]
    out.append(("platform", info["platform"]))
    dev = info["devices"]
    if dev["kind"] == "cuda":
        out.append(("devices", f"{dev['count']} CUDA (CUDA {dev['cuda']})"))
        out += [(f"cuda:{g['index']}", f"{g['name']}, {g['memory_gib']} GiB, bf16 {'yes' if g['bf16'] else 'no'}")
                for g in dev["gpus"]]
    else:
        out.append(("devices", f"CPU only: {dev['cpu']}, {dev['cores']} cores, torch threads {dev['torch_threads']}"))
    bnb = info["bitsandbytes"]
    out.append(("4-bit (bitsandbytes)", f"{'yes' if bnb['available'] else 'no'}: {bnb['reason']}"))
    out.append(("vLLM", info["vllm"]["reason"]))
    tv = info["torchvision"]
    out.append(("torchvision", f"{'yes' if tv['available'] else 'no'}: {tv['reason']}"))
    d = info["defaults"]
    out += [("--dtype auto", d["dtype_auto"]), ("model device", d["device"]),
            ("rollout --backend", f"{d['rollout_backend']} (default)")]
    st = info["storage"]
    for key, name in (("hf_cache", "Hugging Face cache"), ("workdir", "working folder")):
        free = st[f"{key}_free_gib"]
        out.append((name, f"{st[key]} ({'free space unknown' if free is None else f'{free} GiB free'})"))
    return out
