"""Loading models: a hub id, a local folder (full model or PEFT adapter), or a built-in tiny model.

    builtin:tiny-qwen2.5-vl   built in-process (deterministic), saved with save_pretrained into a
                              temporary folder for this process, then loaded like any local folder
    ./out/sft                 a full model folder, or a PEFT adapter folder whose base is read from its
                              rftcli manifest (else from adapter_config.json), overridable with `base`
    Qwen/Qwen2.5-VL-3B-Instruct  a hub id (needs the network or a filled HF cache)

`trust_remote_code` is off unless asked for. Weights load from safetensors only: a folder holding only
pickle files (`.bin`, `.pt`, `.pth`, which can run code when read) is refused unless `allow_pickle=True`.
A folder without weights, or an adapter whose base cannot be found, is a one-line error naming the folder
(ValueError / FileNotFoundError, so the CLI exits 2). 4-bit loading (QLoRA) keeps the vision tower and lm_head in
full precision and applies the CPU fix from bitsandbytes' AVX512-BF16 path (see `_disable_cpu_repack`).
"""

from __future__ import annotations

import ast
import atexit
import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftcli import tiny_model
from rftcli.errors import first_line
from rftcli.manifest import read_checkpoint_manifest
from rftcli.processor_compat import ensure_processor_loads_without_torchvision

_BUILT: dict[str, Path] = {}


def _builtin_folder(spec: str) -> Path:
    """Build a built-in model once per process into a temporary folder removed at exit."""
    if spec not in _BUILT:
        root = Path(tempfile.mkdtemp(prefix="rftcli-builtin-"))
        atexit.register(shutil.rmtree, root, True)
        _BUILT[spec] = tiny_model.build(spec, root / "model")
    return _BUILT[spec]


def resolve(spec: str) -> str:
    """A model argument as something `from_pretrained` takes: a local folder or a hub id."""
    if tiny_model.is_builtin(spec):
        return str(_builtin_folder(spec))
    return spec


def build_builtins(spec: str) -> None:
    """Build now the built-in models `spec` needs (itself, or an adapter's base). A stage calls this before its
    processes are set up (torchrun, `accelerate launch`): after that, transformers' `save_pretrained` writes on
    the first process only, and every process needs its own copy."""
    if tiny_model.is_builtin(spec):
        resolve(spec)
    elif is_adapter(spec):
        base = adapter_base(spec)
        if tiny_model.is_builtin(base):
            resolve(base)


def is_adapter(spec: str) -> bool:
    return Path(spec, "adapter_config.json").is_file()


def adapter_base(spec: str, base: str | None = None) -> str:
    """The base model of an adapter folder: `base` if given, else its manifest's, else PEFT's record."""
    if base:
        return base
    manifest = read_checkpoint_manifest(spec) or {}
    if manifest.get("base_model"):
        return manifest["base_model"]
    cfg = json.loads(Path(spec, "adapter_config.json").read_text())
    if not cfg.get("base_model_name_or_path"):
        raise ValueError(f"{spec}: adapter names no base model; pass --base")
    return cfg["base_model_name_or_path"]


_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


# Settings files a checkpoint folder may hold; a damaged one is named before transformers reads it.
_JSON_FILES = ("config.json", "adapter_config.json", "generation_config.json", "processor_config.json",
               "preprocessor_config.json", "tokenizer_config.json", "rftcli_manifest.json")


def check_files(folder: Path) -> None:
    """Refuse a checkpoint folder whose settings are not valid JSON or whose safetensors files are damaged
    (cut short, a header that does not parse), naming the file: a one-line error before any loading."""
    from safetensors import safe_open

    for f in sorted(folder.iterdir()):
        if f.name in _JSON_FILES or f.name.endswith(".safetensors.index.json"):
            try:
                json.loads(f.read_bytes().decode("utf-8"))
            except UnicodeDecodeError:
                raise ValueError(f"{f}: not valid UTF-8 text, so not the JSON file it should be") from None
            except json.JSONDecodeError as err:
                raise ValueError(f"{f}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
        elif f.suffix == ".safetensors":
            try:
                with safe_open(str(f), framework="pt"):
                    pass  # the header parses and its tensors exactly cover the file
            except Exception as err:
                raise ValueError(f"{f}: damaged safetensors file ({first_line(err)})") from None


def check_weights(folder: Path, *, adapter: bool, allow_pickle: bool = False) -> None:
    """Refuse a local model or adapter folder without weights, or with only pickle weights unless allowed,
    or with damaged files (`check_files`)."""
    check_files(folder)
    files = [f for f in folder.iterdir() if f.is_file()]
    if any(f.name.endswith(".safetensors") or f.name.endswith(".safetensors.index.json") for f in files):
        return
    pickled = [f.name for f in files if f.suffix in _PICKLE_SUFFIXES and f.name != "training_args.bin"]
    if pickled and allow_pickle:
        return
    kind = "adapter" if adapter else "model"
    if pickled:
        raise ValueError(f"{folder}: {kind} weights are only in pickle files ({', '.join(sorted(pickled))}), which "
                         "can run code when loaded; convert them to safetensors, or pass --allow-pickle if you "
                         "trust this folder")
    raise ValueError(f"{folder}: no {kind} weights in this folder (expected *.safetensors)")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16") from None


def quantization_config(dtype: str = "auto"):
    """NF4 with double quantization; vision tower and lm_head stay in full precision.

    Module names match from the start of the qualified name, so the vision tower is `model.visual`:
    the bare name "visual" silently matches nothing.
    """
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=_dtype(dtype),
                              llm_int8_skip_modules=["model.visual", "visual", "lm_head"])


def _disable_cpu_repack(model: Any) -> None:
    # On CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights into an inference-only layout on the
    # first no-grad forward, after which training raises "a view of a leaf Variable ... in-place".
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    processor: Any
    spec: str          # the argument as given
    base: str | None   # the base model, when `spec` is an adapter


def _quiet_transformers() -> None:
    # Per-shard progress bars of from_pretrained/save_pretrained drown a stage's own progress.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_processor(spec: str, trust_remote_code: bool = False, base: str | None = None):
    """The processor of a model argument; an adapter without its own comes from its base (`base` if given)."""
    from transformers import AutoProcessor

    ensure_processor_loads_without_torchvision()
    path = resolve(spec)
    # transformers 5 saves processor_config.json; older folders carry preprocessor_config.json.
    own = any(Path(path, name).is_file() for name in ("processor_config.json", "preprocessor_config.json"))
    if is_adapter(path) and not own:
        return load_processor(adapter_base(path, base), trust_remote_code)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    processor.tokenizer.padding_side = "left"
    return processor


def _looks_like_path(spec: str) -> bool:
    """A spec that can only be a local path (a hub id is `name` or `owner/name`)."""
    return spec.startswith(("/", "./", "../", "~")) or spec.count("/") > 1 or "\\" in spec


def _refuse_missing(path: str, kind: str, missing) -> None:
    """A weight the model has but the checkpoint lacks would start random (transformers, PEFT only log it): a
    header renamed by a flipped byte, or a checkpoint of another architecture. Refuse it, naming the first."""
    missing = sorted(missing)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ValueError(f"{path}: {kind} weights missing from its safetensors files: {missing[0]}{more} "
                         "(a damaged file, or a checkpoint of another architecture); nothing loaded")


def _checked_from_pretrained(auto_class: Any, path: str, kwargs: dict[str, Any]) -> Any:
    """`from_pretrained` that refuses a checkpoint it would load only in part: a weight of the wrong shape
    or missing (transformers starts it at random and only logs a multi-line report). The report is held
    back; the error names the folder and the first such weight."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:  # mismatches reported in `info` (with the shapes), not raised after a multi-line report
        model, info = auto_class.from_pretrained(path, output_loading_info=True, ignore_mismatched_sizes=True,
                                                 **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    mismatched = sorted(info.get("mismatched_keys", ()), key=str)
    if mismatched:
        first = mismatched[0]  # (name, shape in the file, shape in the model)
        key, saved, wanted = (first, None, None) if isinstance(first, str) else (tuple(first) + (None, None))[:3]
        shapes = f" ({list(saved)} in the file, {list(wanted)} in the model)" if saved is not None else ""
        more = f" and {len(mismatched) - 1} more" if len(mismatched) > 1 else ""
        raise ValueError(f"{path}: a weight in its safetensors files has a shape its config.json does not give "
                         f"it: {key}{shapes}{more} (a damaged file, or a config of another model size); "
                         "nothing loaded")
    _refuse_missing(path, "model", info.get("missing_keys", ()))
    unexpected = sorted(info.get("unexpected_keys", ()))
    if unexpected:
        logging.getLogger("rftcli.loading").warning(
            "%s: %d weight(s) in the checkpoint that the model does not use, ignored: %s", path, len(unexpected),
            ", ".join(unexpected[:3]) + (" ..." if len(unexpected) > 3 else ""))
    return model


def _peft_from_pretrained(peft_model: Any, model: Any, path: str) -> Any:
    """`PeftModel.from_pretrained`, refusing an adapter whose file lacks some of its LoRA weights: PEFT warns
    ("Found missing adapter keys ...") and leaves them at their initial values, which for LoRA's B is zero."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = peft_model.from_pretrained(model, path)
    prefix = "Found missing adapter keys while loading the checkpoint: "
    for w in caught:
        text = str(w.message)
        if prefix in text:
            listed = text.split(prefix, 1)[1].rstrip(".")
            try:
                keys = ast.literal_eval(listed)
            except (ValueError, SyntaxError):
                keys = [listed]
            _refuse_missing(path, "adapter", keys)
        else:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return loaded


def load_model(spec: str, *, base: str | None = None, dtype: str = "auto", load_in_4bit: bool = False,
               trust_remote_code: bool = False, device: str | None = None, merge_adapter: bool = False,
               allow_pickle: bool = False) -> LoadedModel:
    """Load a model argument for inference or as a training start point.

    An adapter is loaded on its base (`PeftModel`); with `merge_adapter=True` it is merged in, which is
    what a stage that trains a new adapter on top of it wants. `allow_pickle` lets a local folder whose
    weights are only pickle files load (off: safetensors only).
    """
    from transformers import AutoModelForImageTextToText

    _quiet_transformers()
    path = resolve(spec)
    if is_adapter(path):
        from peft import PeftModel

        check_weights(Path(path), adapter=True, allow_pickle=allow_pickle)
        base_spec = adapter_base(path, base)
        if is_adapter(resolve(base_spec)) and load_in_4bit:
            raise ValueError(f"{spec}: its base {base_spec} is itself an adapter; merge it first "
                             "(`rftcli merge`) to train or run it in 4-bit")
        # A chain (a GRPO adapter on an SFT adapter) loads its base merged, then applies itself.
        try:
            inner = load_model(base_spec, dtype=dtype, load_in_4bit=load_in_4bit, trust_remote_code=trust_remote_code,
                               device=device, merge_adapter=True, allow_pickle=allow_pickle)
        except OSError as err:  # transformers: neither a local folder nor a hub id it can fetch
            raise FileNotFoundError(f"{spec}: its base model {base_spec} cannot be found or loaded "
                                    f"({first_line(err)}); pass --base to name it") from None
        except ValueError as err:
            raise ValueError(f"{spec}: its base model {base_spec}: {first_line(err)}") from None
        model = _peft_from_pretrained(PeftModel, inner.model, path)  # check_weights saw its safetensors file
        if merge_adapter:
            model = model.merge_and_unload()
        return LoadedModel(model=model, processor=load_processor(spec, trust_remote_code, base_spec),
                           spec=spec, base=base_spec)

    local = Path(path)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ValueError(f"{local}: not a model folder (no config.json or adapter_config.json)")
        check_weights(local, adapter=False, allow_pickle=allow_pickle)
    elif _looks_like_path(spec):
        raise FileNotFoundError(f"{spec}: no such model folder")
    kwargs: dict[str, Any] = {"dtype": _dtype(dtype), "trust_remote_code": trust_remote_code,
                              "use_safetensors": True if not allow_pickle else None}
    if load_in_4bit:
        kwargs["quantization_config"] = quantization_config(dtype)
        kwargs["device_map"] = {"": device or default_device()}
    model = _checked_from_pretrained(AutoModelForImageTextToText, path, kwargs)
    if load_in_4bit:
        _disable_cpu_repack(model)
    elif device:
        model = model.to(device)
    return LoadedModel(model=model, processor=load_processor(spec, trust_remote_code), spec=spec, base=None)
