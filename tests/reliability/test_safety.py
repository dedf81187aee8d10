"""Reliability and safety defaults (issue 9): `rftcli doctor`, safetensors-only loading (and
`--allow-pickle`), checkpoint folders that cannot load (no weights, a missing base, damaged weights or
settings files), image paths that leave the input's folder, and a truncated Parquet file given to every
stage. Each bad input must end with one `error:` line naming what and where, exit 2, input untouched."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from rftcli.cli import app
from rftcli.loading import load_model

ROOT = Path(__file__).resolve().parents[2]
TINY = "builtin:tiny-qwen2.5-vl"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def png(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- doctor

def test_doctor_reports_versions_devices_and_what_it_would_use():
    import torch

    from rftcli import __version__, doctor

    info = doctor.report()
    assert set(info) == {"versions", "platform", "devices", "bitsandbytes", "vllm", "torchvision", "defaults", "storage"}
    assert set(doctor.LIBRARIES) | {"python", "rftcli"} == set(info["versions"])
    assert info["versions"]["rftcli"] == __version__
    assert info["versions"]["torch"] == torch.__version__
    if torch.cuda.is_available():
        assert info["devices"]["kind"] == "cuda" and info["devices"]["count"] == torch.cuda.device_count()
        assert info["defaults"]["device"] == "cuda"
    else:
        assert info["devices"]["kind"] == "cpu" and info["devices"]["cores"] >= 1
        assert info["defaults"] == {"dtype_auto": "float32", "device": "cpu", "rollout_backend": "hf"}
        assert info["vllm"]["usable"] is False
    assert isinstance(info["bitsandbytes"]["available"], bool) and info["bitsandbytes"]["reason"]
    assert info["torchvision"]["available"] is (info["versions"]["torchvision"] is not None
                                                and info["torchvision"]["reason"] == "imports")


def test_doctor_command_prints_a_table_and_json():
    result = invoke("doctor", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["versions"]["python"] and "dtype_auto" in info["defaults"]
    result = invoke("doctor")
    assert result.exit_code == 0, result.output
    for label in ("transformers", "bitsandbytes", "--dtype auto", "rollout --backend", "torchvision", "devices"):
        assert label in result.output
    help_text = " ".join(invoke("doctor", "--help").output.split())
    assert "Example: rftcli doctor" in help_text
    assert "rftcli doctor" in (ROOT / "README.md").read_text()


# ---------------------------------------------------------------- checkpoints

def _copy_without_weights(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and ".safetensors" not in f.name:
            shutil.copy2(f, dst / f.name)
    return dst


@pytest.fixture(scope="module")
def pickled_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with its weights saved only as a pickle file (pytorch_model.bin).

    transformers 5 ignores `save_pretrained(safe_serialization=False)` and writes safetensors anyway, so
    the pickle is written the way older checkpoints were: torch.save of the state dict."""
    import torch
    from transformers import AutoModelForImageTextToText

    folder = _copy_without_weights(tiny_model_dir, tmp_path_factory.mktemp("pickled") / "model")
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    model.save_pretrained(folder, safe_serialization=False)
    for f in folder.glob("*.safetensors*"):
        f.unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    assert not list(folder.glob("*.safetensors")) and list(folder.glob("*.bin"))
    return folder


def test_pickle_only_checkpoint_is_refused_unless_allowed(pickled_model, tiny_model_dir, tmp_path, dataset):
    with pytest.raises(ValueError, match=r"only in pickle files \(pytorch_model.bin\).*--allow-pickle") as err:
        load_model(str(pickled_model))
    assert str(pickled_model) in str(err.value)

    loaded = load_model(str(pickled_model), allow_pickle=True, dtype="float32")
    reference = dict(load_model(str(tiny_model_dir), dtype="float32").model.named_parameters())
    for name, param in loaded.model.named_parameters():
        assert param.detach().equal(reference[name].detach()), name

    out = tmp_path / "r.parquet"
    result = invoke("rollout", "-d", dataset, "-m", pickled_model, "--out", out, "--limit", "1")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert str(pickled_model) in " ".join(result.output.split()) and "--allow-pickle" in line
    assert not out.exists()

    # The flag named in the message exists and works: the same rollout runs and equals the safetensors one.
    args = ["rollout", "-d", dataset, "--out", out, "--limit", "1", "-n", "2", "--max-new-tokens", "4"]
    allowed = invoke(*args, "-m", pickled_model, "--allow-pickle")
    assert allowed.exit_code == 0, allowed.output
    reference_out = tmp_path / "ref.parquet"
    safe = invoke(*[reference_out if a is out else a for a in args], "-m", tiny_model_dir)
    assert safe.exit_code == 0, safe.output
    import pyarrow.parquet as pq

    cols = ["completion", "completion_ids", "logprobs"]
    assert pq.read_table(out, columns=cols).equals(pq.read_table(reference_out, columns=cols))


def test_folder_without_weights_is_a_one_line_error(tiny_model_dir, tmp_path, dataset):
    empty = _copy_without_weights(tiny_model_dir, tmp_path / "no-weights")
    with pytest.raises(ValueError, match="no model weights in this folder"):
        load_model(str(empty))
    with pytest.raises(ValueError, match="not a model folder"):
        load_model(str(tmp_path))
    result = invoke("eval", "-d", dataset, "-m", empty, "--out", tmp_path / "ev", "--limit", "1")
    assert result.exit_code == 2
    one_error_line(result)
    assert f"{empty}: no model weights" in " ".join(result.output.split())


@pytest.fixture(scope="module")
def orphan_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter on the tiny model whose recorded base folder no longer exists."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    folder = tmp_path_factory.mktemp("orphan") / "adapter"
    peft_model.save_pretrained(folder)
    cfg_file = folder / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = str(tmp_path_factory.getbasetemp() / "deleted" / "base")
    cfg_file.write_text(json.dumps(cfg))
    return folder


def test_adapter_whose_base_is_missing_is_a_one_line_error(orphan_adapter, tiny_model_dir, tmp_path):
    missing = json.loads((orphan_adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    with pytest.raises(FileNotFoundError) as err:
        load_model(str(orphan_adapter))
    assert str(err.value).startswith(f"{orphan_adapter}: its base model {missing} cannot be found")
    # Naming the base explicitly loads it: the adapter itself is fine.
    assert load_model(str(orphan_adapter), base=str(tiny_model_dir)).base == str(tiny_model_dir)

    out = tmp_path / "merged"
    result = invoke("merge", "--adapter", orphan_adapter, "--out", out)
    assert result.exit_code == 2
    one_error_line(result)
    text = " ".join(result.output.split())
    assert str(orphan_adapter) in text and missing in text
    assert not out.exists()


def test_adapter_with_only_pickle_weights_is_refused(orphan_adapter, tiny_model_dir, tmp_path):
    folder = tmp_path / "adapter"
    shutil.copytree(orphan_adapter, folder)
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    with pytest.raises(ValueError, match=r"adapter weights are only in pickle files.*--allow-pickle"):
        load_model(str(folder), base=str(tiny_model_dir))


# ---------------------------------------------------------------- image paths

@pytest.fixture()
def escaping_input(tmp_path) -> tuple[Path, Path]:
    """data/rows.jsonl whose row 2 names ../secret.png, an image beside (not inside) its folder."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "inside.png").write_bytes(png((10, 200, 10)))
    (tmp_path / "secret.png").write_bytes(png((200, 10, 10)))
    src = tmp_path / "data" / "rows.jsonl"
    rows = [{"prompt": "What colour?", "answer": "green", "images": ["inside.png"]},
            {"prompt": "What colour?", "answer": "red", "images": ["../secret.png"]}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return src, tmp_path / "secret.png"


def test_image_path_leaving_the_input_folder_is_refused(escaping_input, tmp_path):
    src, _ = escaping_input
    before = src.read_bytes()
    out = tmp_path / "d.parquet"
    result = invoke("prepare-data", "--input", src, "--out", out, "--instruction", "none")
    assert result.exit_code == 2
    line = " ".join(result.output.split())
    one_error_line(result)
    assert f"{src}: line 2, column 'images': path '../secret.png' leads outside" in line
    assert "--allow-outside-paths" in line
    assert not out.exists() and src.read_bytes() == before


def test_absolute_image_path_is_refused(escaping_input, tmp_path):
    from rftcli.formats import BadRow
    from rftcli.stages import prepare_data

    src, secret = escaping_input
    src.write_text(json.dumps({"prompt": "What colour?", "answer": "red", "images": [str(secret)]}) + "\n")
    with pytest.raises(BadRow, match="line 1, column 'images': path .*secret.png' leads outside"):
        prepare_data.run(prepare_data.Config(out=tmp_path / "d.parquet", input=src))


def test_outside_paths_are_read_with_the_flag(escaping_input, tmp_path):
    from rftcli.schema import read_table

    src, _ = escaping_input
    out = tmp_path / "d.parquet"
    result = invoke("prepare-data", "--input", src, "--out", out, "--instruction", "none", "--allow-outside-paths",
                    "--test-fraction", "0", "--val-fraction", "0")
    assert result.exit_code == 0, result.output
    rows = read_table(out, "dataset").table.to_pylist()
    colours = {r["answer"]: Image.open(io.BytesIO(r["images"][0]["bytes"])).getpixel((1, 1)) for r in rows}
    assert colours == {"green": (10, 200, 10), "red": (200, 10, 10)}


# ---------------------------------------------------------------- truncated Parquet, every stage

STAGE_ARGS = {
    "prepare-data": ["prepare-data", "--input", "{bad}", "--out", "{out}.parquet"],
    "sft-coldstart": ["sft-coldstart", "-d", "{bad}", "-m", TINY, "--out", "{out}"],
    "rollout": ["rollout", "-d", "{bad}", "-m", TINY, "--out", "{out}.parquet"],
    "score": ["score", "--rollouts", "{bad}", "-r", "accuracy", "--out", "{out}.parquet"],
    "train-grpo": ["train-grpo", "-d", "{bad}", "-m", TINY, "-r", "accuracy", "--out", "{out}"],
    "train-grpo-offline": ["train-grpo", "--rollouts", "{bad}", "-m", TINY, "--out", "{out}"],
    "eval": ["eval", "-d", "{bad}", "-m", TINY, "--out", "{out}"],
}


@pytest.mark.parametrize("stage", sorted(STAGE_ARGS))
def test_truncated_parquet_is_a_one_line_error_and_left_untouched(stage, dataset, tmp_path):
    data = dataset.read_bytes()
    bad = tmp_path / "cut.parquet"
    bad.write_bytes(data[: len(data) * 2 // 3])
    before = bad.read_bytes()
    out = tmp_path / "out"
    args = [a.format(bad=bad, out=out) for a in STAGE_ARGS[stage]]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    one_error_line(result)
    assert f"{bad}: not a readable Parquet file" in " ".join(result.output.split())
    assert bad.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.parquet"]


@pytest.mark.parametrize("command", ["rollout", "sft-coldstart", "train-grpo", "merge", "eval"])
def test_every_model_loading_command_has_allow_pickle(command):
    from typer.main import get_command

    options = {o for p in get_command(app).commands[command].params for o in p.opts}
    assert {"--allow-pickle", "--trust-remote-code"} <= options


# ---------------------------------------------------------------- damaged checkpoint files

MODEL_COMMANDS = {
    "rollout": lambda m, d, o: ["rollout", "-d", d, "-m", m, "--out", f"{o}.parquet", "--limit", "1"],
    "eval": lambda m, d, o: ["eval", "-d", d, "-m", m, "--out", o, "--limit", "1"],
    "sft-coldstart": lambda m, d, o: ["sft-coldstart", "-d", d, "-m", m, "--out", o, "--max-steps", "1"],
    "train-grpo": lambda m, d, o: ["train-grpo", "-d", d, "-m", m, "-r", "accuracy", "--out", o, "--max-steps", "1"],
    "merge": lambda m, d, o: ["merge", "--adapter", m, "--out", o],
}


def _damage(folder: Path, damage: str, cut: float) -> Path:
    if damage == "weights cut short":
        f = next(folder.glob("*.safetensors"))
        data = f.read_bytes()
        f.write_bytes(data[: int(len(data) * cut)])
        return f
    if damage == "weights header garbage":
        f = next(folder.glob("*.safetensors"))
        data = bytearray(f.read_bytes())
        data[8:24] = b"\x00not json at all"
        f.write_bytes(bytes(data))
        return f
    f = folder / ("adapter_config.json" if (folder / "adapter_config.json").is_file() else "config.json")
    f.write_text(f.read_text()[: int(len(f.read_text()) * cut)])
    return f


DAMAGES = [("weights cut short", cut) for cut in (0.0, 0.5, 0.99)] + [("weights header garbage", 1.0)] + [
    ("settings cut short", cut) for cut in (0.0, 0.5, 0.99)]


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
@pytest.mark.parametrize("damage,cut", DAMAGES, ids=[f"{d}-{c}" for d, c in DAMAGES])
def test_a_damaged_checkpoint_file_is_named_before_loading(command, damage, cut, tiny_model_dir, sft_adapter,
                                                           dataset, tmp_path):
    source = sft_adapter if command == "merge" else tiny_model_dir
    folder = shutil.copytree(source, tmp_path / "ckpt")
    damaged = _damage(folder, damage, cut)
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    result = invoke(*MODEL_COMMANDS[command](str(folder), str(dataset), str(tmp_path / "out")))
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert f"{damaged}: " in " ".join(result.output.split()), line
    assert ("damaged safetensors file" if "weights" in damage else "not valid JSON") in line
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def _rename_first_tensor(folder: Path, marker: str) -> str:
    """Flip one byte of the first tensor name holding `marker` in a safetensors header: the header still
    parses and covers the file, so only the loaded model can tell that a weight is missing."""
    import struct

    f = next(folder.glob("*.safetensors"))
    data = bytearray(f.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    name = next(k for k in json.loads(data[8:8 + n]) if marker in k)
    start = data.index(f'"{name}"'.encode(), 8) + 1 + len(name) - len("weight")
    data[start] ^= 0x01  # "weight" -> "veight"
    f.write_bytes(bytes(data))
    return name


@pytest.mark.parametrize("command,kind", [("rollout", "model"), ("eval", "model"), ("rollout", "adapter"),
                                          ("merge", "adapter")])
def test_a_weight_renamed_in_the_header_is_refused_not_left_random(command, kind, tiny_model_dir, sft_adapter,
                                                                   dataset, tmp_path):
    folder = shutil.copytree(sft_adapter if kind == "adapter" else tiny_model_dir, tmp_path / "ckpt")
    name = _rename_first_tensor(folder, "lora_A" if kind == "adapter" else "norm.weight")
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    result = invoke(*MODEL_COMMANDS[command](str(folder), str(dataset), str(tmp_path / "out")))
    assert result.exit_code == 2, result.output
    line = " ".join(one_error_line(result).split())
    assert f"{folder}: {kind} weights missing from its safetensors files: " in line
    assert name.rsplit(".", 1)[0].split(".")[-1] in line  # the module whose weight went missing
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_weight_shape_changed_in_the_header_is_named(tiny_model_dir, dataset, tmp_path):
    import struct

    folder = shutil.copytree(tiny_model_dir, tmp_path / "ckpt")
    f = folder / "model.safetensors"
    data = bytearray(f.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    header = data[8:8 + n].decode()
    entry = json.loads(header)["model.embed_tokens.weight"]
    rows, cols = entry["shape"]
    old, new = f'"shape":[{rows},{cols}]', f'"shape":[{cols},{rows}]'  # same bytes, same length: still parses
    at = header.index(old, header.index('"model.embed_tokens.weight"'))
    data[8 + at:8 + at + len(old)] = new.encode()
    f.write_bytes(bytes(data))
    result = invoke(*MODEL_COMMANDS["rollout"](str(folder), str(dataset), str(tmp_path / "out")))
    assert result.exit_code == 2, result.output
    line = " ".join(one_error_line(result).split())
    assert f"{folder}: a weight in its safetensors files has a shape its config.json does not give it: " in line
    assert f"embed_tokens.weight ([{cols}, {rows}] in the file, [{rows}, {cols}] in the model)" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
