"""Each stage through its library `run`: files written, schema, manifest, values."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from rftcli.manifest import read_checkpoint_manifest
from rftcli.schema import ArtifactError, read_table
from rftcli.stages import eval as eval_stage
from rftcli.stages import merge, prepare_data, rollout, score, train_grpo
from rftcli.stages.prepare_data import BadRow, assign_split

from .conftest import TINY


def _png_bytes(color=(200, 0, 0), size=28) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- prepare-data

def test_synthetic_dataset_is_deterministic_and_split(tmp_path, dataset):
    again = tmp_path / "again.parquet"
    prepare_data.run(prepare_data.Config(out=again, task="counting", num=48, test_fraction=0.25))
    a, b = read_table(dataset, "dataset"), read_table(again, "dataset")
    assert a.table.equals(b.table)
    assert a.manifest["stage"] == "prepare-data" and a.manifest["config"]["num"] == 48
    assert set(a.table.column("split").to_pylist()) == {"train", "test"}
    row = a.table.slice(0, 1).to_pylist()[0]
    assert row["answer"] in {str(i) for i in range(5)} and row["answer_type"] == "number"
    assert row["response"].endswith(f"<answer>{row['answer']}</answer>")
    assert Image.open(io.BytesIO(row["images"][0]["bytes"])).size == (56, 56)


def test_split_by_id_hash_is_stable_and_proportional():
    ids = [f"row-{i}" for i in range(20000)]
    splits = [assign_split(i, 0.1, 0.05) for i in ids]
    assert splits == [assign_split(i, 0.1, 0.05) for i in ids]
    assert 0.09 < splits.count("test") / len(ids) < 0.11
    assert 0.04 < splits.count("val") / len(ids) < 0.06


def test_jsonl_input_with_paths_base64_and_extra_fields(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(_png_bytes())
    lines = [
        {"question": "What color?", "image": "imgs/a.png", "answer": "red", "source": "mine"},
        {"id": "q2", "prompt": "How many?", "images": [base64.b64encode(_png_bytes()).decode()], "answer": 3},
        {"prompt": "2+2?", "answer": "4"},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "d.parquet"
    result = prepare_data.run(prepare_data.Config(out=out, input=src, instruction=""))
    rows = read_table(out, "dataset").table.to_pylist()
    assert result.rows == 3
    assert [r["id"] for r in rows] == ["in-0000000", "q2", "in-0000002"]
    assert rows[0]["prompt"] == "What color?" and rows[0]["images"][0]["path"] == "imgs/a.png"
    assert json.loads(rows[0]["metadata"]) == {"source": "mine"}
    assert rows[1]["answer"] == "3" and rows[1]["answer_type"] == "number" and rows[1]["images"][0]["path"] is None
    assert rows[2]["images"] == [] and rows[0]["answer_type"] == "text"


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": \n', r"in.jsonl: line 2, column \d+: malformed JSON"),
    ('{"prompt": "a", "answer": "1", "image": "missing.png"}\n', r"in.jsonl: line 1, column 'images': image file .*missing.png not found"),
    ('{"prompt": "a", "answer": "  "}\n', r"in.jsonl: line 1, column 'answer': missing or empty"),
    ('{"answer": "1"}\n', r"in.jsonl: line 1, column 'prompt': missing or empty"),
    ('{"prompt": "a", "answer": "1", "image": "broken.png"}\n', r"in.jsonl: line 1, column 'images': unreadable image"),
])
def test_bad_input_names_file_line_column_and_writes_nothing(tmp_path, content, message):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    out = tmp_path / "out" / "d.parquet"
    with pytest.raises(BadRow, match=message):
        prepare_data.run(prepare_data.Config(out=out, input=src))
    assert not out.exists() and list(out.parent.iterdir()) == []


# ---------------------------------------------------------------- rollout

def test_rollouts_schema_groups_and_logprobs(rollouts, tiny_model_dir):
    art = read_table(rollouts, "rollouts")
    rows = art.table.to_pylist()
    assert len(rows) == 6 * 3
    assert [r["sample_index"] for r in rows[:3]] == [0, 1, 2]
    assert len({r["group_index"] for r in rows}) == 6
    for r in rows:
        assert len(r["completion_ids"]) == len(r["logprobs"]) == r["num_tokens"] > 0
        assert r["finish_reason"] in {"stop", "length"}
        assert all(lp <= 0 for lp in r["logprobs"])
        assert r["policy"] == str(tiny_model_dir) and r["policy_hash"].startswith("sha256:")
        assert r["backend"] == "hf" and r["max_new_tokens"] == 8
    assert art.manifest["inputs"]["model"]["hash"] == rows[0]["policy_hash"]


def test_stored_logprobs_match_a_forward_pass(rollouts, tiny_model_dir):
    """With temperature 1 and no top-k/top-p, the sampling distribution is the model's own."""
    from rftcli.generation import encode_prompts, extend_inputs
    from rftcli.loading import load_model

    loaded = load_model(str(tiny_model_dir), dtype="float32")
    model = loaded.model.eval()
    worst = 0.0
    for row in read_table(rollouts, "rollouts").table.slice(0, 4).to_pylist():
        enc = encode_prompts(loaded.processor, [row], "cpu")
        ids = torch.tensor([row["completion_ids"]])
        full = extend_inputs(enc, ids)
        with torch.no_grad():
            logits = model(**full).logits[0, enc["input_ids"].shape[1] - 1:-1].float()  # [T, V]
        lp = torch.log_softmax(logits, -1).gather(1, ids[0][:, None]).squeeze(1)
        worst = max(worst, float((lp - torch.tensor(row["logprobs"])).abs().max()))
    assert worst < 1e-3


def test_rollout_is_reproducible_with_a_seed(tmp_path, dataset, tiny_model_dir, rollouts):
    again = tmp_path / "again.parquet"
    rollout.run(rollout.Config(dataset=dataset, model=str(tiny_model_dir), out=again, num_generations=3,
                               max_new_tokens=8, limit=6, batch_size=4, seed=1), progress=False)
    a = pq.read_table(rollouts, columns=["completion", "completion_ids"])
    b = pq.read_table(again, columns=["completion", "completion_ids"])
    assert a.equals(b)


# ---------------------------------------------------------------- score

def test_score_adds_weighted_reward_columns(tmp_path, rollouts):
    custom = tmp_path / "my_rewards.py"
    custom.write_text("def length(completions, **kw):\n    return [len(c) / 100 for c in completions]\n\n"
                      "def flaky(completions, **kw):\n    if len(completions) > 1:\n        raise RuntimeError('batch')\n"
                      "    if len(completions[0]) % 2:\n        raise RuntimeError('odd')\n    return [1.0]\n")
    out = tmp_path / "scores.parquet"
    result = score.run(score.Config(rollouts=rollouts, out=out,
                                    rewards=("accuracy=1", "format=0.5", f"{custom}:length=2", f"{custom}:flaky")))
    art = read_table(out, "scores")
    assert art.reward_names == ["accuracy", "format", "length", "flaky"]
    rows = art.table.to_pylist()
    for r in rows:
        assert r["reward_length"] == pytest.approx(len(r["completion"]) / 100)
        assert r["reward_flaky"] == (None if len(r["completion"]) % 2 else 1.0)
        expected = r["reward_accuracy"] + 0.5 * r["reward_format"] + 2 * r["reward_length"] + (r["reward_flaky"] or 0)
        assert r["reward"] == pytest.approx(expected)
    odd = sum(len(r["completion"]) % 2 for r in rows)
    assert result.errors.get("flaky", 0) == odd
    assert result.groups == 6 and 0 <= result.zero_variance_groups <= 1
    # Rollout columns are carried unchanged.
    assert art.table.column("completion_ids").equals(pq.read_table(rollouts).column("completion_ids"))


def test_score_refuses_a_dataset(tmp_path, dataset):
    with pytest.raises(ArtifactError, match="is a dataset table, expected rollouts or scores"):
        score.run(score.Config(rollouts=dataset, out=tmp_path / "s.parquet"))
    assert not (tmp_path / "s.parquet").exists()


# ---------------------------------------------------------------- sft-coldstart, train-grpo, merge

def _lora_b_norm(folder) -> float:
    from safetensors.torch import load_file

    weights = load_file(folder / "adapter_model.safetensors")
    assert any("lora_B" in k for k in weights)
    assert not any("visual" in k for k in weights)  # language model only by default
    return sum(float(v.abs().sum()) for k, v in weights.items() if "lora_B" in k)


def test_sft_writes_an_adapter_that_moved(sft_adapter):
    names = {p.name for p in sft_adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "rftcli_manifest.json", "metrics.jsonl",
            "tokenizer.json", "chat_template.jinja", "processor_config.json"} <= names
    assert not any(n.startswith(".") or n == "trainer" for n in names)
    manifest = read_checkpoint_manifest(sft_adapter)
    assert manifest["stage"] == "sft-coldstart" and manifest["base_model"] == TINY and manifest["kind"] == "adapter"
    assert manifest["inputs"]["dataset"]["hash"].startswith("sha256:")
    assert _lora_b_norm(sft_adapter) > 0  # LoRA B starts at zero: non-zero means it trained
    steps = [json.loads(line) for line in (sft_adapter / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s] == [1, 2, 3, 4]


def test_grpo_online_moves_the_adapter(tmp_path, dataset, sft_adapter):
    custom = tmp_path / "graded.py"
    # A graded reward so that advantages are non-zero even for a random policy.
    custom.write_text("def length(completions, **kw):\n"
                      "    return [len(c[0]['content'] if isinstance(c, list) else c) / 50 for c in completions]\n")
    out = tmp_path / "grpo"
    result = train_grpo.run(train_grpo.Config(
        dataset=dataset, model=str(sft_adapter), out=out, rewards=(f"{custom}:length", "format=0.2"),
        num_generations=4, max_completion_length=8, batch_size=8, max_steps=2, learning_rate=1e-2,
        logging_steps=1, limit=8))
    assert result.steps == 2
    assert _lora_b_norm(out) > 0
    manifest = read_checkpoint_manifest(out)
    assert manifest["base_model"] == str(sft_adapter)
    assert [r["name"] for r in manifest["rewards"]] == ["length", "format"]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("reward" in entry for entry in logged)


def test_grpo_config_rejects_bad_batch():
    with pytest.raises(ValueError, match="multiple of num_generations"):
        train_grpo.Config(dataset="d", model="m", out="o", batch_size=6, num_generations=4)


def test_merge_matches_adapter_and_loads_plainly(tmp_path, sft_adapter):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path / "merged"
    result = merge.run(merge.Config(adapter=sft_adapter, out=out))
    assert result.max_logit_diff < 1e-4 < result.adapter_effect
    assert result.base == TINY
    from safetensors.torch import load_file

    assert not any("lora" in k for k in load_file(out / "model.safetensors"))
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert model.config.model_type == "qwen2_5_vl" and processor.tokenizer.eos_token == "<|im_end|>"
    assert read_checkpoint_manifest(out)["verification"]["max_logit_diff"] == result.max_logit_diff


def test_merge_refuses_a_full_model(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="not an adapter folder"):
        merge.run(merge.Config(adapter=tiny_model_dir, out=tmp_path / "m"))


# ---------------------------------------------------------------- eval

def test_eval_two_models_side_by_side(tmp_path, dataset, sft_adapter):
    out = tmp_path / "eval"
    result = eval_stage.run(eval_stage.Config(dataset=dataset, models=(TINY, str(sft_adapter)), labels=("base", "sft"),
                                              out=out, max_new_tokens=8, limit=5), progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.png", "flips.json", "lengths.png", "report.md",
                                                     "results.parquet", "summary.json"]
    art = read_table(out / "results.parquet", "eval")
    assert art.table.num_rows == 10
    assert art.reward_names == ["accuracy", "format", "accuracy_lenient"]  # strict and lenient side by side
    assert set(art.table.column("model").to_pylist()) == {"base", "sft"}
    summary = json.loads((out / "summary.json").read_text())
    for label in ("base", "sft"):
        s = summary["models"][label]
        assert s["rows"] == 5 and 0 <= s["accuracy"] <= 1 and s["mean_tokens"] > 0
        assert s["accuracy"] == result.summary["models"][label]["accuracy"]
    rows = art.table.to_pylist()
    assert all(r["correct"] == (r["reward_accuracy"] == 1.0) for r in rows)


def test_every_table_opens_in_pandas_duckdb_polars_and_datasets(tmp_path, dataset, rollouts):
    import datasets
    import duckdb
    import pandas as pd
    import polars as pl

    scores = tmp_path / "scores.parquet"
    score.run(score.Config(rollouts=rollouts, out=scores))
    for path, n in [(dataset, 48), (rollouts, 18), (scores, 18)]:
        assert len(pd.read_parquet(path)) == n
        assert duckdb.sql(f"select count(*) from '{path}'").fetchall() == [(n,)]
        assert pl.read_parquet(path).height == n
        ds = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
        assert isinstance(ds[0]["images"][0], Image.Image)
    ds = datasets.load_dataset("parquet", data_files=str(scores), split="train", cache_dir=str(tmp_path / "hf"))
    assert isinstance(ds[0]["completion_ids"][0], int) and isinstance(ds[0]["reward"], float)


def test_examples_convert_and_score(tmp_path, rollouts):
    root = Path(__file__).resolve().parent.parent / "examples"
    out = tmp_path / "vqa.parquet"
    assert prepare_data.run(prepare_data.Config(out=out, input=root / "vqa_rows.jsonl")).rows == 3
    rows = read_table(out, "dataset").table.to_pylist()
    assert [r["answer_type"] for r in rows] == ["number", "choice", "text"] and len(rows[2]["images"]) == 1
    scores = tmp_path / "s.parquet"
    score.run(score.Config(rollouts=rollouts, out=scores,
                           rewards=(f"{root}/my_rewards.py:brevity", f"{root}/my_rewards.py:answer_is_digit")))
    table = read_table(scores, "scores").table
    assert all(0 <= v <= 1 for v in table.column("reward_brevity").to_pylist())
