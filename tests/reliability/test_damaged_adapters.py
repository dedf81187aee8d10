"""Damaged adapter, tokenizer, chat-template and config files, and the base an adapter records. Each damage is
bad input: one `error:` line naming the folder (and the file where known), exit 2, input untouched, nothing
written. An adapter records a base that loads later, from any working directory, with rftcli and with plain
PEFT; loading one prints no deprecation notices addressed to library developers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rftcli.loading import adapter_base, load_model

from .test_safety import MODEL_COMMANDS, TINY, invoke, one_error_line


def _edit_json(f: Path, **changes) -> None:
    data = json.loads(f.read_text())
    data.update(changes)
    f.write_text(json.dumps(data))


def _resave_lora_b_wrong_shape(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    f = folder / "adapter_model.safetensors"
    weights = load_file(f)
    key = next(k for k in weights if "lora_B" in k)
    rows, cols = weights[key].shape
    weights[key] = torch.zeros(rows + 1, cols)
    save_file(weights, f)


def _other_rank(folder: Path) -> None:
    cfg = json.loads((folder / "adapter_config.json").read_text())
    _edit_json(folder / "adapter_config.json", r=4 if cfg["r"] != 4 else 2)


def _cycle_of_two(folder: Path) -> None:
    other = shutil.copytree(folder, folder.parent / "other")
    _edit_json(folder / "rftcli_manifest.json", base_model=str(other))
    _edit_json(other / "rftcli_manifest.json", base_model=str(folder))


def _no_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer_config.json").unlink()


# name: (source folder, damage, file named in the error (None: the folder), words of the message)
DAMAGES = {
    "peft_type unknown": ("adapter", lambda d: _edit_json(d / "adapter_config.json", peft_type="BANANA"),
                          "adapter_config.json", "unknown peft_type 'BANANA'"),
    "rank changed": ("adapter", _other_rank, None, "does not fit its adapter_config.json"),
    "lora_B wrong shape": ("adapter", _resave_lora_b_wrong_shape, None, "does not fit its adapter_config.json"),
    "base is itself": ("adapter", lambda d: _edit_json(d / "rftcli_manifest.json", base_model=str(d)),
                       "rftcli_manifest.json", "loops back on itself"),
    "base cycle of two": ("adapter", _cycle_of_two, None, "loops back on itself"),
    "manifest is a list": ("adapter", lambda d: (d / "rftcli_manifest.json").write_text("[]"),
                           "rftcli_manifest.json", "not a JSON object"),
    "chat template syntax": ("model", lambda d: (d / "chat_template.jinja").write_text("{% for x in %}"),
                             "chat_template.jinja", "chat template does not compile"),
    "adapter chat template syntax": ("adapter", lambda d: (d / "chat_template.jinja").write_text("{% for x in %}"),
                                     "chat_template.jinja", "chat template does not compile"),
    "tokenizer.json not a tokenizer": ("model", lambda d: (d / "tokenizer.json").write_text(
        '{"version":"1.0","model":5}'), "tokenizer.json", "not a tokenizer file"),
    "tokenizer.json not JSON": ("model", lambda d: (d / "tokenizer.json").write_text("not json {"),
                                "tokenizer.json", "not valid JSON"),
    "chat_template.json not JSON": ("model", lambda d: (d / "chat_template.json").write_text('{"chat_template": '),
                                    "chat_template.json", "not valid JSON"),
    "tokenizer files deleted": ("model", _no_tokenizer, None, "no tokenizer in this folder"),
    "model_type bert": ("model", lambda d: _edit_json(d / "config.json", model_type="bert"), None,
                        "not an image-text-to-text model"),
    "model_type llama": ("model", lambda d: _edit_json(d / "config.json", model_type="llama"), None,
                         "not an image-text-to-text model"),
    "model_type unknown": ("model", lambda d: _edit_json(d / "config.json", model_type="no_such_model"), None,
                           "not an image-text-to-text model"),
}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


CASES = [(damage, command) for damage in sorted(DAMAGES)
         for command in (("rollout", "merge") if DAMAGES[damage][0] == "adapter" else ("rollout",))]


@pytest.mark.parametrize("damage,command", CASES, ids=[f"{d}-{c}" for d, c in CASES])
def test_a_damaged_checkpoint_is_one_error_line_naming_it(damage, command, tiny_model_dir, sft_adapter, dataset,
                                                          tmp_path):
    kind, apply, named_file, words = DAMAGES[damage]
    folder = shutil.copytree(sft_adapter if kind == "adapter" else tiny_model_dir, tmp_path / "ckpt")
    apply(folder)
    before = _snapshot(tmp_path)
    result = invoke(*MODEL_COMMANDS[command](str(folder), str(dataset), str(tmp_path / "out")))
    assert result.exit_code == 2, result.output
    line = " ".join(one_error_line(result).split())
    assert line.startswith(f"error: {folder}"), line  # the folder first, then the file where known
    assert named_file is None or str(folder / named_file) in line, line
    assert words in line, line
    assert _snapshot(tmp_path) == before  # input untouched, nothing written


# ---------------------------------------------------------------- the base an adapter records

def _plain_generate(adapter: Path):
    """Load an adapter the way a user of plain transformers + PEFT does, and generate a few tokens."""
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForImageTextToText

    base = PeftConfig.from_pretrained(str(adapter)).base_model_name_or_path
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), str(adapter)).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False)
        logits = model(input_ids=ids).logits
    assert out.shape == (1, 7)
    return base, logits


def test_adapters_record_a_base_that_loads_from_anywhere(sft_adapter, tiny_model_dir, dataset, tmp_path,
                                                         monkeypatch):
    import torch

    from rftcli.stages import sft_coldstart

    # A built-in base: its spec (what rftcli resolves), not the temporary folder it was built in.
    cfg = json.loads((sft_adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == TINY
    assert "rftcli-builtin-" not in (sft_adapter / "README.md").read_text()
    assert adapter_base(str(sft_adapter)) == TINY

    # A relative local folder: its absolute path; the manifest keeps the argument as given.
    monkeypatch.chdir(tiny_model_dir.parent)
    out = tmp_path / "sft"
    sft_coldstart.run(sft_coldstart.Config(dataset=dataset, model=tiny_model_dir.name, out=out, max_steps=1,
                                           batch_size=4, learning_rate=1e-2, logging_steps=1))
    recorded = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(recorded).is_absolute() and Path(recorded).resolve() == tiny_model_dir.resolve()
    assert f"base_model: {recorded}\n" in (out / "README.md").read_text()
    assert json.loads((out / "rftcli_manifest.json").read_text())["base_model"] == tiny_model_dir.name
    assert adapter_base(str(out)) == tiny_model_dir.name  # from where it was trained: as it always was

    # From another working directory: plain PEFT loads it on the recorded base, and so does rftcli.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    base, plain_logits = _plain_generate(out)
    assert base == recorded
    loaded = load_model(str(out), dtype="float32")
    assert loaded.base == recorded
    with torch.no_grad():
        ours = loaded.model.eval()(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    torch.testing.assert_close(ours, plain_logits)

    # An older adapter that recorded the temporary folder of a built-in base: the manifest's base wins.
    old = shutil.copytree(sft_adapter, tmp_path / "old")
    _edit_json(old / "adapter_config.json", base_model_name_or_path=str(tmp_path / "rftcli-builtin-x" / "model"))
    assert adapter_base(str(old)) == TINY
    # An adapter without a manifest whose record is relative: resolved from the working directory.
    plain = shutil.copytree(out, tmp_path / "plain")
    (plain / "rftcli_manifest.json").unlink()
    _edit_json(plain / "adapter_config.json", base_model_name_or_path=tiny_model_dir.name)
    assert adapter_base(str(plain)) == tiny_model_dir.name


# ---------------------------------------------------------------- quiet loading

def test_loading_an_adapter_prints_no_future_warning(sft_adapter, dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "r.parquet"
    proc = subprocess.run([sys.executable, "-m", "rftcli", "rollout", "-d", str(dataset), "-m", str(sft_adapter),
                           "--out", str(out), "--limit", "1", "-n", "1", "--max-new-tokens", "2"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FutureWarning" not in proc.stderr and "is_gradient_checkpointing" not in proc.stderr, proc.stderr
    assert out.is_file()
