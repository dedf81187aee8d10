"""sft-coldstart and merge on the tiny model: the labels TRL trains on, LoRA targets per architecture,
QLoRA on a CPU, gradient checkpointing, eval loss, resume of a killed run, distillation input, and the
merged folder (logits, files, plain reload, refusals)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rftcli.cli import app
from rftcli.loading import resolve
from rftcli.manifest import make_manifest, read_checkpoint_manifest
from rftcli.schema import read_table, write_table
from rftcli.stages import merge, prepare_data, score, sft_coldstart
from rftcli.stages.rollout import select_split
from rftcli.training import latest_checkpoint, lora_target_modules, trl_dataset, work_folder

from .conftest import TINY, kill_after_checkpoint

runner = CliRunner()
# Small steps that visibly move LoRA weights; dropout 0 so runs that should agree can be compared exactly.
FAST = dict(max_steps=4, batch_size=4, learning_rate=1e-2, logging_steps=1, lora_dropout=0.0, seed=0)
ADAPTER = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The counting task with a val split (the shared fixture has none)."""
    out = tmp_path_factory.mktemp("sftdata") / "counting.parquet"
    prepare_data.run(prepare_data.Config(out=out, task="counting", num=48, test_fraction=0.2, val_fraction=0.15))
    return out


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, data) -> Path:
    out = tmp_path_factory.mktemp("lora") / "sft"
    sft_coldstart.run(sft_coldstart.Config(dataset=data, model=TINY, out=out, **FAST))
    return out


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory, data) -> tuple[Path, sft_coldstart.Result]:
    # Evaluating every 2 steps puts an eval-mode no-grad forward of the 4-bit model between training
    # steps: on CPUs with AVX512-BF16 that breaks training unless bitsandbytes' repacking is disabled.
    out = tmp_path_factory.mktemp("qlora") / "sft"
    result = sft_coldstart.run(sft_coldstart.Config(dataset=data, model=TINY, out=out, load_in_4bit=True,
                                                    eval_split="val", eval_steps=2, **FAST))
    return out, result


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / ADAPTER)


def _logged(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- what the loss covers

def test_labels_mask_the_prompt_and_keep_the_assistant_turn(tmp_path, data):
    """The batch TRL's collator builds: every prompt token (system, user text, image pads, the
    assistant header) is -100; the assistant text and its end-of-turn are the labels."""
    from rftcli.generation import encode_prompts
    from rftcli.loading import load_model

    table, _ = sft_coldstart.sft_rows(data, "train")
    rows = table.slice(0, 3).to_pylist()
    loaded = load_model(TINY)
    train = trl_dataset(table, with_completion=True)
    config = sft_coldstart.Config(dataset=data, model=TINY, out=tmp_path / "unused")
    trainer = sft_coldstart.sft_trainer(config, loaded, train, None, tmp_path / "work")
    batch = trainer.data_collator([train[i] for i in range(3)])
    tok = loaded.processor.tokenizer
    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    for i, row in enumerate(rows):
        real = batch["attention_mask"][i] == 1
        ids, labels = batch["input_ids"][i][real], batch["labels"][i][real]  # [L_i]
        prompt = encode_prompts(loaded.processor, [row], "cpu")["input_ids"][0]  # [P]: as rollout/eval see it
        n = len(prompt)
        assert torch.equal(ids[:n], prompt)
        assert (prompt == image_pad).sum() == 4  # a 56x56 image: 4 merged patches
        assert (labels[:n] == -100).all()
        assert torch.equal(labels[n:], ids[n:])
        assert tok.decode(labels[n:]) == row["response"] + "<|im_end|>\n"
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


# ---------------------------------------------------------------- LoRA targets

# Where each architecture keeps its parts, written out here independently of rftcli.training.
ARCHITECTURES = {
    "qwen2_5_vl": ("model.language_model", ("model.visual",)),
    "llava": ("model.language_model", ("model.vision_tower", "model.multi_modal_projector")),
    "idefics3": ("model.text_model", ("model.vision_model", "model.connector")),
    "gemma3": ("model.language_model", ("model.vision_tower", "model.multi_modal_projector")),
    "mllama": ("model.language_model", ("model.vision_model", "model.multi_modal_projector")),
}


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_default_targets_are_the_language_models_linear_layers(model_type):
    from transformers import AutoConfig, AutoModelForImageTextToText

    with torch.device("meta"):  # full-size default configs, no memory
        model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(model_type))
    language, vision = ARCHITECTURES[model_type]
    linear = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    in_language = {n for n in linear if n.startswith(language + ".")}
    in_vision = {n for n in linear if n.startswith(tuple(p + "." for p in vision))}
    assert in_language and in_vision

    def matched(pattern):  # PEFT full-matches a string target_modules against every module name
        return {n for n, _ in model.named_modules() if re.fullmatch(pattern, n)}

    assert matched(lora_target_modules(model)) == in_language
    assert matched(lora_target_modules(model, vision=True)) == in_language | in_vision
    only = matched(lora_target_modules(model, names="q_proj,v_proj"))
    assert only and only == {n for n in in_language if n.endswith((".q_proj", ".v_proj"))}


def test_target_modules_and_lora_vision_choose_the_adapted_layers(tmp_path, data):
    out = tmp_path / "sft"
    sft_coldstart.run(sft_coldstart.Config(dataset=data, model=TINY, out=out, lora_vision=True,
                                           target_modules="qkv,v_proj", **{**FAST, "max_steps": 2}))
    b = {k: v for k, v in _weights(out).items() if "lora_B" in k}
    layers = {re.sub(r"\.lora_B\.weight$", "", k).removeprefix("base_model.model.") for k in b}
    assert layers == {"model.visual.blocks.0.attn.qkv", "model.visual.blocks.1.attn.qkv",
                      "model.language_model.layers.0.self_attn.v_proj",
                      "model.language_model.layers.1.self_attn.v_proj"}
    assert all(float(v.abs().sum()) > 0 for v in b.values())  # the vision LoRA trained too
    with pytest.raises(ValueError, match="no linear layer named nope in the language model; available: down_proj"):
        sft_coldstart.run(sft_coldstart.Config(dataset=data, model=TINY, out=tmp_path / "x", target_modules="nope"))


# ---------------------------------------------------------------- QLoRA, gradient checkpointing, eval

def test_qlora_sft_runs_on_cpu_and_moves_the_adapter(qlora_run, lora_run):
    out, result = qlora_run
    manifest = read_checkpoint_manifest(out)
    assert manifest["quantization"]["load_in_4bit"] is True
    assert manifest["quantization"]["bnb_4bit_quant_type"] == "nf4"
    assert manifest["quantization"]["bnb_4bit_use_double_quant"] is True
    assert manifest["base_model"] == TINY and result.steps == 4
    q, full = _weights(out), _weights(lora_run)
    assert q.keys() == full.keys() and not any("visual" in k for k in q)
    assert all(float(v.abs().sum()) > 0 for k, v in q.items() if "lora_B" in k)
    # Same seed, data and settings: only the 4-bit base differs, and it changes what every layer learned
    # (here by 25-36%) by far more than the bf16 storage of QLoRA's adapter weights (0.2%) could.
    b_keys = [k for k in q if "lora_B" in k]
    assert min(float((q[k].float() - full[k]).norm() / full[k].norm()) for k in b_keys) > 0.05


def test_eval_split_loss_is_logged_and_returned(qlora_run):
    out, result = qlora_run
    evals = [e for e in _logged(out) if "eval_loss" in e]
    assert [e["step"] for e in evals] == [2, 4]
    assert result.eval_loss == evals[-1]["eval_loss"] and result.eval_loss > 0
    assert read_checkpoint_manifest(out)["rows_read"] == result.rows_read == result.rows


def test_gradient_checkpointing_recomputes_and_gives_the_same_adapter(tmp_path, data, lora_run):
    from rftcli.loading import load_model

    # It is on: attention inside a checkpointed decoder layer runs again during the backward pass.
    table, _ = sft_coldstart.sft_rows(data, "train")
    config = sft_coldstart.Config(dataset=data, model=TINY, out=tmp_path / "unused", gradient_checkpointing=True,
                                  **{**FAST, "max_steps": 1})
    trainer = sft_coldstart.sft_trainer(config, load_model(TINY), trl_dataset(table, with_completion=True), None,
                                        tmp_path / "work")
    calls = []
    attention = trainer.model.get_submodule("base_model.model.model.language_model.layers.0.self_attn")
    attention.register_forward_hook(lambda *args: calls.append(torch.is_grad_enabled()))
    trainer.train()
    assert len(calls) == 2

    out = tmp_path / "sft-gc"
    sft_coldstart.run(sft_coldstart.Config(dataset=data, model=TINY, out=out, gradient_checkpointing=True, **FAST))
    a, b = _weights(lora_run), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)


def test_packing_is_refused_with_a_reason(tmp_path, data):
    with pytest.raises(ValueError, match="does not pack vision-language data"):
        sft_coldstart.Config(dataset=data, model=TINY, out=tmp_path / "x", packing=True)
    result = runner.invoke(app, ["sft-coldstart", "-d", str(data), "-m", TINY, "--out", str(tmp_path / "x"),
                                 "--packing"])
    assert result.exit_code == 2 and "--packing is not supported" in result.output
    assert "Not supported" in " ".join(runner.invoke(app, ["sft-coldstart", "--help"]).output.split())


# ---------------------------------------------------------------- resume

def _flags(settings: dict) -> list[str]:
    names = {"learning_rate": "--lr"}
    return [x for k, v in settings.items() for x in (names.get(k, "--" + k.replace("_", "-")), str(v))]


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, data):
    """A real process killed after a checkpoint exists, continued with resume: the final adapter and
    every logged training and eval loss are identical to those of a run never interrupted (weights,
    optimizer, scheduler, RNG states and the data position all come back from the checkpoint)."""
    settings = dict(max_steps=24, batch_size=4, learning_rate=0.01, logging_steps=1, save_steps=3,
                    eval_split="val", eval_steps=6, seed=3)
    ref = tmp_path / "ref"
    sft_coldstart.run(sft_coldstart.Config(dataset=data, model=TINY, out=ref, **settings))

    out = tmp_path / "sft"
    work = work_folder(out)
    step = kill_after_checkpoint(["sft-coldstart", "-d", str(data), "-m", TINY, "--out", str(out), *_flags(settings)],
                                 work)
    assert not out.exists()
    checkpoint = latest_checkpoint(work)
    assert 3 <= step < 24 and step % 3 == 0

    # A checkpoint cut off mid-save (trainer_state.json is written last) is never resumed from.
    partial = work / "checkpoint-999"
    shutil.copytree(checkpoint, partial)
    (partial / "trainer_state.json").unlink()
    # A fresh start will not discard the checkpoints, and a resume with other settings is refused.
    with pytest.raises(FileExistsError, match="pass --resume to continue it or --overwrite"):
        sft_coldstart.run(sft_coldstart.Config(dataset=data, model=TINY, out=out, **settings))
    with pytest.raises(ValueError, match="changed: --learning-rate$"):
        sft_coldstart.run(sft_coldstart.Config(dataset=data, model=TINY, out=out, resume=True,
                                               **{**settings, "learning_rate": 0.02}))

    result = sft_coldstart.run(sft_coldstart.Config(dataset=data, model=TINY, out=out, resume=True, **settings))
    assert result.resumed_from == step and result.steps == 24
    assert not work.exists()
    assert read_checkpoint_manifest(out)["resumed_from_step"] == step
    a, b = _weights(ref), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def losses(folder):
        return [(e["step"], e.get("loss"), e.get("eval_loss")) for e in _logged(folder)
                if "loss" in e or "eval_loss" in e]

    assert losses(out) == losses(ref)
    assert [s for s, loss, _ in losses(out) if loss is not None] == list(range(1, 25))


def test_a_full_fine_tune_resumes_from_its_checkpoint_weights(tmp_path, data):
    """`--full` checkpoints hold the model under its Hub names (`model.layers.*`); transformers' Trainer loads
    them by module name and, finding none, went on from the starting weights with a warning. Resumed, the
    final weights equal an uninterrupted run's and differ from the start."""
    settings = dict(full=True, max_steps=6, batch_size=4, learning_rate=0.01, save_steps=2, seed=3)
    ref = tmp_path / "ref"
    sft_coldstart.run(sft_coldstart.Config(dataset=data, model=TINY, out=ref, **settings))
    out = tmp_path / "sft"
    flags = _flags({k: v for k, v in settings.items() if k != "full"}) + ["--full"]
    step = kill_after_checkpoint(["sft-coldstart", "-d", str(data), "-m", TINY, "--out", str(out), *flags],
                                 work_folder(out))
    assert 2 <= step < 6
    result = sft_coldstart.run(sft_coldstart.Config(dataset=data, model=TINY, out=out, resume=True, **settings))
    assert result.resumed_from == step
    a, b = load_file(ref / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(Path(resolve(TINY)) / "model.safetensors")
    assert not torch.equal(start["model.norm.weight"], b["model.norm.weight"])

def test_resume_with_nothing_to_resume_starts_at_step_0(tmp_path, data):
    """A pipeline may always rerun with --resume: with no work folder, or one killed before its first
    complete checkpoint, the run starts over; the folder's torn checkpoint is not used."""
    out = tmp_path / "sft"
    torn = work_folder(out) / "checkpoint-2"
    torn.mkdir(parents=True)
    (work_folder(out) / "rftcli_run.json").write_text('{"--lr": ')  # cut off by a kill
    result = sft_coldstart.run(sft_coldstart.Config(dataset=data, model=TINY, out=out, resume=True, save_steps=2,
                                                    max_steps=2, batch_size=4))
    assert result.resumed_from is None and result.steps == 2
    assert out.is_dir() and not work_folder(out).exists()
    with pytest.raises(ValueError, match="needs --save-steps"):
        sft_coldstart.Config(dataset=data, model=TINY, out=tmp_path / "sft", resume=True)


# ---------------------------------------------------------------- distillation

@pytest.fixture(scope="module")
def teacher_scores(tmp_path_factory, data) -> Path:
    """Samples as `rollout` writes them, scored by `score`: per prompt a correct completion, a wrong one,
    and a correct one cut off at the token limit."""
    from rftcli.loading import load_processor

    tok = load_processor(TINY).tokenizer
    root = tmp_path_factory.mktemp("teacher")
    rows = []
    train = select_split(read_table(data, "dataset").table, "train")
    for g, row in enumerate(train.slice(0, 6).to_pylist()):
        wrong = f"<think>I count them.</think>\n<answer>{int(row['answer']) + 1}</answer>"
        for s, (text, finish) in enumerate([(row["response"], "stop"), (wrong, "stop"), (row["response"], "length")]):
            ids = tok(text).input_ids
            rows.append({**row, "group_index": g, "sample_index": s, "completion": text, "completion_ids": ids,
                         "logprobs": [-0.5] * len(ids), "num_tokens": len(ids), "finish_reason": finish,
                         "policy": "teacher", "policy_hash": "teacher", "backend": "hf", "temperature": 1.0,
                         "top_p": 1.0, "top_k": 0, "max_new_tokens": 64, "seed": 0})
    rollouts = root / "rollouts.parquet"
    write_table(rollouts, "rollouts", rows, make_manifest("rollout", {}))
    scores = root / "scores.parquet"
    score.run(score.Config(rollouts=rollouts, out=scores, rewards=("accuracy=1", "format=0.2")))
    return scores


def test_distillation_keeps_correct_finished_completions(teacher_scores):
    all_rows = read_table(teacher_scores, "scores").table.to_pylist()
    splits = {r["split"] for r in all_rows}
    kept, read = sft_coldstart.sft_rows(teacher_scores, "train", min_reward=1, reward_column="reward_accuracy")
    n_train = sum(r["split"] == "train" for r in all_rows)
    assert read == n_train and kept.num_rows == n_train // 3 and splits == {"train"}
    expected = [r["completion"] for r in all_rows if r["sample_index"] == 0]
    assert kept.column("response").to_pylist() == expected
    assert kept.column("reasoning").null_count == kept.num_rows
    # Without a reward filter every finished completion is a target; truncated ones never are.
    unfiltered, _ = sft_coldstart.sft_rows(teacher_scores, "train")
    assert unfiltered.num_rows == 2 * n_train // 3


def test_distillation_through_the_cli(tmp_path, data, teacher_scores):
    """Train on the teacher's correct completions; evaluate on the reference dataset's val split (the
    reward filter belongs to the training input and is not applied to a separate eval table)."""
    out = tmp_path / "sft"
    result = runner.invoke(app, ["sft-coldstart", "-d", str(teacher_scores), "--min-reward", "1",
                                 "--reward-column", "reward_accuracy", "-m", TINY, "--out", str(out),
                                 "--eval-dataset", str(data), "--eval-split", "val",
                                 "--max-steps", "2", "--batch-size", "4", "--lr", "1e-2", "--logging-steps", "1"])
    assert result.exit_code == 0, result.output
    assert "6 of 18" in result.output and "eval loss" in result.output
    manifest = read_checkpoint_manifest(out)
    assert manifest["rows"] == 6 and manifest["rows_read"] == 18 and manifest["config"]["min_reward"] == 1
    assert set(manifest["inputs"]) == {"dataset", "model", "eval_dataset"}
    assert [e["step"] for e in _logged(out) if "eval_loss" in e] == [2]
    assert all(float(v.abs().sum()) > 0 for k, v in _weights(out).items() if "lora_B" in k)


def test_distillation_filters_explain_bad_input(tmp_path, data, teacher_scores):
    with pytest.raises(ValueError, match="filters a scores table's completions; this is a dataset table"):
        sft_coldstart.sft_rows(data, "train", min_reward=1)
    with pytest.raises(ValueError, match=r"no column 'reward_nope'; reward columns: reward, reward_accuracy, "
                                         r"reward_format"):
        sft_coldstart.sft_rows(teacher_scores, "train", min_reward=1, reward_column="reward_nope")
    with pytest.raises(ValueError, match=r"no rows to train on in split 'train' with reward_accuracy >= 2"):
        sft_coldstart.run(sft_coldstart.Config(dataset=teacher_scores, model=TINY, out=tmp_path / "x", min_reward=2,
                                               reward_column="reward_accuracy"))
    assert not work_folder(tmp_path / "x").exists()


# ---------------------------------------------------------------- merge

MERGED_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "chat_template.jinja", "processor_config.json", "preprocessor_config.json", "rftcli_manifest.json"}


def _adapter_model_logits(adapter: Path, base: Path):
    """The adapter on its float32 base, built with transformers and PEFT alone."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32),
                                      adapter).eval()
    return merge.probe_logits(model, AutoProcessor.from_pretrained(base))


def test_merge_of_a_qlora_adapter_reloads_plainly(tmp_path, qlora_run, tiny_model_dir):
    """Merged into the float32 base; the folder reloads with AutoModelForImageTextToText and AutoProcessor.
    (Without torchvision, AutoProcessor needs rftcli's processor_compat in this process; on a machine with
    torchvision, transformers builds the video processor from preprocessor_config.json, checked below.)"""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.video_processing_utils import BaseVideoProcessor

    adapter, _ = qlora_run
    out = tmp_path / "merged"
    # --base given explicitly (the tiny model's folder) instead of the manifest's builtin name.
    result = merge.run(merge.Config(adapter=adapter, out=out, base=str(tiny_model_dir)))
    assert result.base == str(tiny_model_dir)
    assert result.max_logit_diff < 1e-4 < 0.05 < result.adapter_effect
    assert result.saved_logit_diff < 1e-4
    assert {p.name for p in out.iterdir()} == MERGED_FILES
    weights = load_file(out / "model.safetensors")
    assert not any("lora" in k for k in weights) and all(v.dtype == torch.float32 for v in weights.values())
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"] and config["dtype"] == "float32"
    assert "quantization_config" not in config

    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    reference = _adapter_model_logits(adapter, tiny_model_dir)
    assert float((merge.probe_logits(model, processor) - reference).abs().max()) < 1e-4
    assert processor.chat_template == AutoProcessor.from_pretrained(tiny_model_dir).chat_template
    assert processor.tokenizer.eos_token == "<|im_end|>"
    video, _ = BaseVideoProcessor.get_video_processor_dict(str(out))
    assert video["patch_size"] == 14 and video["merge_size"] == 2
    verification = read_checkpoint_manifest(out)["verification"]
    assert verification["max_logit_diff"] == result.max_logit_diff and verification["tolerance"] == 1e-4


def test_merge_in_bfloat16_reports_rounding_separately(tmp_path, lora_run):
    out = tmp_path / "merged-bf16"
    result = merge.run(merge.Config(adapter=lora_run, out=out, dtype="bfloat16"))
    assert result.max_logit_diff < 1e-4 and result.saved_logit_diff < 1e-4
    assert 0 < result.rounding_effect < 0.05 < result.adapter_effect
    assert all(v.dtype == torch.bfloat16 for v in load_file(out / "model.safetensors").values())
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_merge_refuses_above_tolerance_and_writes_nothing(tmp_path, lora_run):
    out = tmp_path / "merged"
    with pytest.raises(ValueError, match=r"merged model's logits and the adapter model's differ by .* \(> 1e-09\)"):
        merge.run(merge.Config(adapter=lora_run, out=out, tolerance=1e-9))
    assert list(tmp_path.iterdir()) == []
    # A corrupted adapter: one LoRA matrix overwritten with NaN.
    from safetensors.torch import save_file

    bad = tmp_path / "bad"
    shutil.copytree(lora_run, bad)
    weights = _weights(bad)
    key = next(k for k in weights if k.endswith("layers.1.self_attn.q_proj.lora_B.weight"))
    weights[key] = torch.full_like(weights[key], float("nan"))
    save_file(weights, bad / ADAPTER)
    result = runner.invoke(app, ["merge", "--adapter", str(bad), "--out", str(out)])
    assert result.exit_code == 2 and "logits are not finite" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


@pytest.mark.slow
def test_two_processes_over_gloo_match_one_with_the_same_global_batch(tmp_path, data):
    """torchrun with 2 CPU processes of 2 rows each vs one process of 4, from the built-in model (each process
    builds its own copy before the processes are set up): the same steps, losses and adapter, written once."""
    single = tmp_path / "single"
    sft_coldstart.run(sft_coldstart.Config(dataset=data, model=TINY, out=single, **{**FAST, "max_steps": 2}))
    double = tmp_path / "double"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), "-m", "rftcli", "sft-coldstart", "-d", str(data), "-m", TINY, "--out", str(double),
                           "--max-steps", "2", "--batch-size", "2", "--lr", "1e-2", "--logging-steps", "1",
                           "--lora-dropout", "0", "--seed", "0"],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [[(e["step"], e["loss"]) for e in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
               if "loss" in e] for d in (single, double)]
    assert [s for s, _ in losses[1]] == [s for s, _ in losses[0]] == [1, 2]
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(*losses, strict=True)), losses
    assert read_checkpoint_manifest(double)["world_size"] == 2 and not work_folder(double).exists()
    a, b = load_file(single / ADAPTER), load_file(double / ADAPTER)
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_the_first_sft_step_holds_the_longest_row(tmp_path, dataset, monkeypatch):
    """sft-coldstart's sampler starts with the row of the longest prompt and target, one swap from its own order."""
    from rftcli import training
    from rftcli.ordering import longest_row

    art = read_table(dataset, "dataset")
    rows = art.table.to_pylist()
    train = [i for i, row in enumerate(rows) if row["split"] == "train"]
    rows[train[len(train) // 2]]["response"] = "I count every square twice. " * 12 + "<answer>2</answer>"
    path = tmp_path / "data.parquet"
    write_table(path, "dataset", rows, art.manifest)
    seen = {}

    class Stop(Exception):
        pass

    def first_batch(trainer, resume_from):
        torch.manual_seed(0)
        seen["order"] = list(trainer._get_train_sampler())
        torch.manual_seed(0)
        seen["base"] = list(type(trainer)._get_train_sampler(trainer))
        seen["rows"] = trainer.train_dataset
        raise Stop

    monkeypatch.setattr(training, "run_training", first_batch)
    with pytest.raises(Stop):
        sft_coldstart.run(sft_coldstart.Config(dataset=path, model="builtin:tiny-qwen2.5-vl", out=tmp_path / "sft",
                                               max_steps=1, batch_size=4))
    used = [r for r in rows if r["split"] == "train"]
    longest = longest_row(used, "builtin:tiny-qwen2.5-vl")
    assert used[longest]["id"] == rows[train[len(train) // 2]]["id"]
    order, base = seen["order"], seen["base"]
    assert order[0] == longest and base[0] != longest
    assert order == [{base[0]: longest, longest: base[0]}.get(i, i) for i in base]
