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
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftcli import tiny_model
from rftcli.errors import first_line
from rftcli.manifest import read_checkpoint_manifest
from rftcli.processor_compat import ensure_processor_loads_without_torchvision, processor_class_for

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


def _adapter_config(spec: str) -> dict[str, Any]:
    path = Path(spec, "adapter_config.json")
    try:
        cfg = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({first_line(err)})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: not a JSON object, so not an adapter config")
    return cfg


def _recorded_at(recorded: str, spec: str) -> bool:
    """Whether `recorded` (an absolute path) is relative path `spec` made absolute: the same trailing names."""
    parts = Path(os.path.normpath(spec)).parts
    return bool(parts) and ".." not in parts and Path(recorded).parts[-len(parts):] == parts


def _recorded_base(spec: str) -> str:
    """The base an adapter folder records: its manifest's `base_model` (a built-in spec, a hub id, or a folder,
    relative to the working directory as given at training time), else PEFT's `base_model_name_or_path`. A
    relative manifest base that is not found from here is taken from adapter_config.json, where rftcli records
    it as an absolute path; a temporary path PEFT recorded for a built-in base never wins over the manifest."""
    manifest = read_checkpoint_manifest(spec) or {}
    base = manifest.get("base_model")
    if base:
        if tiny_model.is_builtin(base) or Path(base).exists():
            return base
        recorded = _adapter_config(spec).get("base_model_name_or_path")
        if (isinstance(recorded, str) and Path(recorded).is_absolute() and Path(recorded).is_dir()
                and _recorded_at(recorded, base)):
            return recorded
        return base
    recorded = _adapter_config(spec).get("base_model_name_or_path")
    if not recorded:
        raise ValueError(f"{spec}: adapter names no base model; pass --base")
    return recorded


def adapter_base(spec: str, base: str | None = None) -> str:
    """The base model of an adapter folder: `base` if given, else its manifest's, else PEFT's record. A chain
    of adapters that leads back to one of its own folders is refused, naming the chain."""
    chosen = base or _recorded_base(spec)
    chain, seen, current = [spec, chosen], {os.path.realpath(spec)}, chosen
    while not tiny_model.is_builtin(current) and is_adapter(current):
        if os.path.realpath(current) in seen:
            where = f"{current}/rftcli_manifest.json" if Path(current, "rftcli_manifest.json").is_file() else current
            raise ValueError(f"{spec}: its chain of base models loops back on itself ({' -> '.join(chain)}); "
                             f"fix base_model in {where}, or pass --base to name the base")
        seen.add(os.path.realpath(current))
        current = _recorded_base(current)
        chain.append(current)
    return chosen


_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


# Settings files a checkpoint folder may hold; a damaged one is named before transformers reads it.
_JSON_FILES = ("config.json", "adapter_config.json", "generation_config.json", "processor_config.json",
               "preprocessor_config.json", "video_preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "added_tokens.json", "vocab.json", "chat_template.json",
               "rftcli_manifest.json")


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
    """NF4 with double quantization; the vision side (tower and projector, under any of the family names in
    `rftcli.model_parts.VISION_MODULES`: Qwen's `visual`, Gemma 3's `vision_tower` and `multi_modal_projector`,
    Idefics3's `vision_model` and `connector`, ...) and lm_head stay in full precision.

    transformers matches a skip name from the start of the qualified name (or as its suffix), so the bare name
    "visual" silently matches nothing inside `model.visual`; a regex with an optional leading path does.
    """
    from transformers import BitsAndBytesConfig

    from rftcli.model_parts import vision_module_pattern

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=_dtype(dtype),
                              llm_int8_skip_modules=[vision_module_pattern(), "lm_head"])


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


# Files a tokenizer is read from (a fast tokenizer's tokenizer.json, a BPE vocabulary, a sentencepiece model).
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")


def _damaged_tokenizer_file(folder: Path) -> str | None:
    """Why tokenizer.json, when there is one, is not a tokenizer the tokenizers library reads; else None."""
    f = folder / "tokenizer.json"
    if not f.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        Tokenizer.from_file(str(f))
    except Exception as err:  # the Rust library raises plain Exception
        return f"{f}: not a tokenizer file the tokenizers library can read ({first_line(err)})"
    return None


def _check_chat_templates(processor: Any, folder: str) -> None:
    """Compile the chat templates now, naming their file, rather than fail at the first prompt."""
    from jinja2 import TemplateError
    from transformers.utils.chat_template_utils import _compile_jinja_template

    templates: list[Any] = [getattr(processor, "chat_template", None),
                            getattr(getattr(processor, "tokenizer", None), "chat_template", None)]
    texts = [t for tpl in templates for t in (tpl.values() if isinstance(tpl, dict) else [tpl]) if isinstance(t, str)]
    for text in texts:
        try:
            _compile_jinja_template(text)
        except TemplateError as err:
            names = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")
            where = next((str(Path(folder, n)) for n in names if Path(folder, n).is_file()), folder)
            raise ValueError(f"{where}: the chat template does not compile ({first_line(err)})") from None


def load_processor(spec: str, trust_remote_code: bool = False, base: str | None = None):
    """The processor of a model argument; an adapter without its own comes from its base (`base` if given).
    A local folder without a tokenizer, or whose processor files are damaged, is a one-line error naming it."""
    from transformers import AutoProcessor

    ensure_processor_loads_without_torchvision()
    path = resolve(spec)
    # transformers 5 saves processor_config.json; older folders carry preprocessor_config.json.
    own = any(Path(path, name).is_file() for name in ("processor_config.json", "preprocessor_config.json"))
    if is_adapter(path) and not own:
        return load_processor(adapter_base(path, base), trust_remote_code)
    local = Path(path).is_dir()
    if local and not any(Path(path, name).is_file() for name in _TOKENIZER_FILES):
        raise ValueError(f"{path}: no tokenizer in this folder (expected tokenizer.json, or vocab.json and "
                         "merges.txt); copy the tokenizer files of its base model into it")
    try:
        auto = (processor_class_for(path) if local else None) or AutoProcessor  # SmolVLM2 without torchvision
        processor = auto.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ImportError):
        raise
    except Exception as err:
        if not local:
            raise
        if str(err).startswith(path):
            raise ValueError(first_line(err)) from None
        raise ValueError(_damaged_tokenizer_file(Path(path)) or f"{path}: its processor or tokenizer files cannot be "
                         f"loaded ({type(err).__name__}: {first_line(err)})") from None
    if getattr(processor, "tokenizer", None) is None:
        raise ValueError(f"{path}: no tokenizer in this folder's processor")
    if local:
        _check_chat_templates(processor, path)
    processor.tokenizer.padding_side = "left"
    return processor


def _check_model_type(folder: Path, trust_remote_code: bool) -> None:
    """Refuse a folder whose config.json names a model that is not image-text-to-text (a text-only model, an
    encoder, a type transformers does not know), naming the folder."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    cfg = json.loads((folder / "config.json").read_text())
    model_type = cfg.get("model_type") if isinstance(cfg, dict) else None
    if not isinstance(model_type, str) or (trust_remote_code and "auto_map" in cfg):
        return  # left to transformers: a custom model with its code, or a config that names no type
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise ValueError(f"{folder}: config.json has model_type {model_type!r}, which is not an image-text-to-text "
                         "model; rftcli needs one (such as qwen2_5_vl, Qwen2.5-VL)")


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


def checked_from_pretrained(auto_class: Any, path: str, kwargs: dict[str, Any]) -> Any:
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


def _check_adapter_config(path: str) -> None:
    """Refuse an adapter_config.json naming an adapter type PEFT does not know, naming the file."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    peft_type = _adapter_config(path).get("peft_type")
    if peft_type is not None and peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
        raise ValueError(f"{Path(path, 'adapter_config.json')}: unknown peft_type {peft_type!r} (PEFT knows "
                         f"{', '.join(sorted(str(getattr(t, 'value', t)) for t in PEFT_TYPE_TO_CONFIG_MAPPING)[:6])}, ...)")


def _module_of(filename: str) -> str | None:
    """The imported module whose source is `filename`, so a re-emitted warning meets the filters by module."""
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == filename:
            return name
    return None


def _peft_from_pretrained(model: Any, path: str) -> Any:
    """`PeftModel.from_pretrained`, refusing an adapter whose file lacks some of its LoRA weights: PEFT warns
    ("Found missing adapter keys ...") and leaves them at their initial values, which for LoRA's B is zero.
    An adapter whose weights do not fit its adapter_config.json (another rank, a re-saved tensor), or whose
    config PEFT cannot read, is a one-line error naming the folder."""
    from peft import PeftModel

    _check_adapter_config(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loaded = PeftModel.from_pretrained(model, path)
        except RuntimeError as err:
            text = str(err)
            if "Error(s) in loading state_dict" not in text:
                raise
            detail = next((line.strip().rstrip(".") for line in text.splitlines() if "size mismatch" in line),
                          first_line(err))
            raise ValueError(f"{path}: adapter_model.safetensors does not fit its adapter_config.json: {detail} "
                             "(a damaged file, or a config changed after training); nothing loaded") from None
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}: PEFT cannot load this adapter from its adapter_config.json "
                             f"({type(err).__name__}: {first_line(err)})") from None
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
        else:  # not ours to swallow: re-emitted under its own module, so the usual filters apply
            module = _module_of(w.filename)
            registry = vars(sys.modules[module]).setdefault("__warningregistry__", {}) if module else None
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, module=module, registry=registry)
    return loaded


def _check_model_folder(spec: str, path: str, trust_remote_code: bool, allow_pickle: bool) -> None:
    """The checks a local full-model folder passes before it loads (none for a hub id)."""
    local = Path(path)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ValueError(f"{local}: not a model folder (no config.json or adapter_config.json)")
        check_weights(local, adapter=False, allow_pickle=allow_pickle)
        _check_model_type(local, trust_remote_code)
    elif _looks_like_path(spec):
        raise FileNotFoundError(f"{spec}: no such model folder")


def check_model(spec: str, *, base: str | None = None, trust_remote_code: bool = False,
                allow_pickle: bool = False) -> None:
    """Run the file checks `load_model` makes, without loading: for a stage that loads several models one
    after another (eval), so a damaged later one is named before the first is evaluated."""
    path = resolve(spec)
    if is_adapter(path):
        check_weights(Path(path), adapter=True, allow_pickle=allow_pickle)
        _check_adapter_config(path)
        base_spec = adapter_base(path, base)
        try:
            check_model(base_spec, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(f"{spec}: its base model {base_spec}: {first_line(err)}") from None
        return
    _check_model_folder(spec, path, trust_remote_code, allow_pickle)


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
        model = _peft_from_pretrained(inner.model, path)  # check_weights saw its safetensors file
        if merge_adapter:
            model = model.merge_and_unload()
        return LoadedModel(model=model, processor=load_processor(spec, trust_remote_code, base_spec),
                           spec=spec, base=base_spec)

    _check_model_folder(spec, path, trust_remote_code, allow_pickle)
    kwargs: dict[str, Any] = {"dtype": _dtype(dtype), "trust_remote_code": trust_remote_code,
                              "use_safetensors": True if not allow_pickle else None}
    if load_in_4bit:
        kwargs["quantization_config"] = quantization_config(dtype)
        kwargs["device_map"] = {"": device or default_device()}
    model = checked_from_pretrained(AutoModelForImageTextToText, path, kwargs)
    if load_in_4bit:
        _disable_cpu_repack(model)
    elif device:
        model = model.to(device)
    return LoadedModel(model=model, processor=load_processor(spec, trust_remote_code), spec=spec, base=None)
