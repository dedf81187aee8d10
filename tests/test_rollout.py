"""rollout: schema and order, seeded sampling, log-prob check, stop strings, batching back-off, resume after
a real kill, the shard store, and the vllm backend's import check."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from rftcli.cli import app
from rftcli.generation import (
    SamplingSettings,
    _SeededSampler,
    encode_prompts,
    generate,
    generate_encoded,
    placeholder_ids,
    prompt_length,
    repeat_encoded,
    row_seed,
    sample_tokens,
    uniforms,
)
from rftcli.schema import ROLLOUT_FIELDS, read_table, write_table
from rftcli.shards import ShardedOutput, work_folder
from rftcli.stages import rollout
from rftcli.stages.rollout import check_logprobs, in_batches

from .conftest import kill_once_shards

ROOT = Path(__file__).resolve().parent.parent


def _config(dataset, model, out, **kw) -> rollout.Config:
    settings = dict(num_generations=3, max_new_tokens=10, limit=8, batch_size=3, seed=7)
    settings.update(kw)
    return rollout.Config(dataset=dataset, model=str(model), out=out, **settings)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, dataset, tiny_model_dir):
    out = tmp_path_factory.mktemp("rollout") / "r.parquet"
    result = rollout.run(_config(dataset, tiny_model_dir, out), progress=False)
    return out, result


# ---------------------------------------------------------------- the table


def test_schema_dataset_order_and_per_row_seeds(base_run, dataset, tiny_model_dir, loaded):
    out, result = base_run
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.parquet"]  # the work folder is gone
    art = read_table(out, "rollouts")
    assert art.table.schema.names == [f.name for f in ROLLOUT_FIELDS]
    rows = art.table.to_pylist()
    prompts = read_table(dataset, "dataset").table
    prompts = prompts.filter(pc.equal(prompts["split"], "train")).slice(0, 8).to_pylist()
    assert len(rows) == 8 * 3 == result.rows and result.prompts == 8
    # Dataset order, whatever order the prompts were generated in.
    assert [(r["group_index"], r["sample_index"]) for r in rows] == [(g, j) for g in range(8) for j in range(3)]
    assert [r["id"] for r in rows[::3]] == [p["id"] for p in prompts]
    assert rows[0]["images"] == prompts[0]["images"] and rows[0]["prompt"] == prompts[0]["prompt"]
    banned = set(placeholder_ids(loaded.processor))
    eos = loaded.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for r in rows:
        assert r["seed"] == row_seed(7, r["id"], r["sample_index"])
        assert len(r["completion_ids"]) == len(r["logprobs"]) == r["num_tokens"] > 0
        # No stop strings here: "stop" means the completion ends with eos, "length" that it used all 10 tokens.
        assert (r["finish_reason"], r["completion_ids"][-1] == eos) in {("stop", True), ("length", False)}
        assert r["finish_reason"] == "stop" or r["num_tokens"] == 10
        assert all(lp <= 0 for lp in r["logprobs"])
        assert (r["policy"], r["backend"], r["max_new_tokens"], r["top_k"]) == (str(tiny_model_dir), "hf", 10, 0)
        assert r["policy_hash"] == art.manifest["inputs"]["model"]["hash"]
        assert not banned & set(r["completion_ids"])
    assert len({r["seed"] for r in rows}) == len(rows)
    assert art.manifest["config"]["batch_size"] == 3 and art.manifest["config"]["seed"] == 7
    assert result.finish_reasons == dict(sorted(Counter(r["finish_reason"] for r in rows).items()))
    lengths = sorted(r["num_tokens"] for r in rows)
    assert result.lengths["min"] == lengths[0] and result.lengths["max"] == lengths[-1]
    assert result.lengths["mean"] == pytest.approx(sum(lengths) / len(lengths))
    assert result.resumed_prompts == 0 and result.generated_tokens == sum(lengths)


def test_completion_text_is_the_decoded_ids(base_run, loaded):
    rows = read_table(base_run[0], "rollouts").table.to_pylist()
    for r in rows:
        assert r["completion"] == loaded.processor.tokenizer.decode(r["completion_ids"], skip_special_tokens=True)


def test_prompt_length_estimate_matches_the_processor(dataset, loaded):
    rows = read_table(dataset, "dataset").table.slice(0, 4).to_pylist()
    for r in rows:
        assert prompt_length(loaded.processor, r) == encode_prompts(loaded.processor, [r], "cpu")["input_ids"].shape[1]


# ---------------------------------------------------------------- seeds and determinism


def test_same_seed_same_table_other_seed_other_samples(tmp_path, base_run, dataset, tiny_model_dir):
    again = tmp_path / "again.parquet"
    rollout.run(_config(dataset, tiny_model_dir, again), progress=False)
    assert pq.read_table(again).equals(pq.read_table(base_run[0]))
    other = tmp_path / "other.parquet"
    rollout.run(_config(dataset, tiny_model_dir, other, seed=8), progress=False)
    a = pq.read_table(base_run[0], columns=["completion_ids"]).column(0).to_pylist()
    b = pq.read_table(other, columns=["completion_ids"]).column(0).to_pylist()
    assert sum(x != y for x, y in zip(a, b, strict=True)) > len(a) // 2


def test_samples_do_not_depend_on_batch_composition(tmp_path, base_run, dataset, tiny_model_dir):
    """Batch 1 over a different prompt subset (--limit 5) draws the same samples for the shared prompts."""
    out = tmp_path / "b1.parquet"
    rollout.run(_config(dataset, tiny_model_dir, out, batch_size=1, limit=5), progress=False)
    small = read_table(out, "rollouts").table.to_pylist()
    big = {(r["id"], r["sample_index"]): r for r in read_table(base_run[0], "rollouts").table.to_pylist()}
    assert len(small) == 15
    for r in small:
        ref = big[(r["id"], r["sample_index"])]
        assert r["completion_ids"] == ref["completion_ids"] and r["seed"] == ref["seed"]
        assert np.allclose(r["logprobs"], ref["logprobs"], atol=1e-5)


def test_generate_groups_match_across_batches_and_orders(dataset, loaded):
    rows = read_table(dataset, "dataset").table.slice(0, 5).to_pylist()
    settings = SamplingSettings(n=2, max_new_tokens=8, temperature=0.9, top_k=50)
    together = generate(loaded.model, loaded.processor, rows, settings, seed=3)
    alone = [generate(loaded.model, loaded.processor, [r], settings, seed=3)[0] for r in reversed(rows)][::-1]
    for a, b in zip(together, alone, strict=True):
        assert [s.token_ids for s in a] == [s.token_ids for s in b]


def test_repeated_encoding_equals_encoding_repeated_rows(dataset, loaded):
    """The CPU path's shortcut: the processor's output for rows, expanded, equals encoding each row n times."""
    rows = read_table(dataset, "dataset").table.slice(0, 3).to_pylist()
    rows[1] = {**rows[1], "images": []}  # text only
    rows[2] = {**rows[2], "images": rows[2]["images"] + rows[0]["images"]}  # two images
    fast = repeat_encoded(encode_prompts(loaded.processor, rows, "cpu"), rows, 3)
    slow = encode_prompts(loaded.processor, [r for r in rows for _ in range(3)], "cpu")
    assert fast is not None and sorted(fast) == sorted(slow.keys())
    assert {"pixel_values", "image_grid_thw", "mm_token_type_ids"} <= set(fast)
    for key, value in slow.items():
        assert torch.equal(fast[key], value), key


def test_both_expansion_paths_draw_the_same_samples(dataset, loaded):
    """Prompts repeated n times by the processor (the CPU path) or expanded by generate (the GPU path)."""
    rows = read_table(dataset, "dataset").table.slice(0, 3).to_pylist()
    settings = SamplingSettings(n=3, max_new_tokens=8, top_p=0.9)
    seeds = [row_seed(1, r["id"], j) for r in rows for j in range(3)]
    with torch.no_grad():
        expanded = generate_encoded(loaded.model, loaded.processor, encode_prompts(loaded.processor, rows, "cpu"),
                                    settings, seeds)
        repeated = generate_encoded(loaded.model, loaded.processor,
                                    encode_prompts(loaded.processor, [r for r in rows for _ in range(3)], "cpu"),
                                    settings, seeds, repeated=True)
    assert [s.token_ids for s in expanded] == [s.token_ids for s in repeated]
    assert np.allclose([v for s in expanded for v in s.logprobs], [v for s in repeated for v in s.logprobs], atol=1e-5)


def test_greedy_generate_matches_transformers(dataset, loaded):
    """eval's path (greedy, n=1) still returns what plain `generate(do_sample=False)` does."""
    rows = read_table(dataset, "dataset").table.slice(0, 3).to_pylist()
    ours = generate(loaded.model, loaded.processor, rows, SamplingSettings(n=1, do_sample=False, max_new_tokens=6))
    enc = encode_prompts(loaded.processor, rows, "cpu")
    with torch.no_grad():
        plain = loaded.model.generate(**enc, do_sample=False, max_new_tokens=6,
                                      pad_token_id=loaded.processor.tokenizer.pad_token_id)
    plain = plain[:, enc["input_ids"].shape[1]:].tolist()
    assert [g[0].token_ids for g in ours] == [p[:len(g[0].token_ids)] for g, p in zip(ours, plain, strict=True)]


def test_uniforms_are_splitmix64():
    # SplitMix64 seeded with 0: first output 0xE220A8397B1DCDAF, second 0x6E789E6AA1B965F4.
    u = uniforms(np.array([0, 0], dtype=np.uint64), 0)
    assert u[0] == (0xE220A8397B1DCDAF >> 11) * 2.0**-53
    assert uniforms(np.array([0], dtype=np.uint64), 1)[0] == (0x6E789E6AA1B965F4 >> 11) * 2.0**-53
    many = uniforms(np.arange(20000, dtype=np.uint64), 5)
    assert 0 <= many.min() and many.max() < 1 and abs(many.mean() - 0.5) < 0.01
    nxt = uniforms(np.arange(20000, dtype=np.uint64), 6)  # the next step of the same streams
    assert (many != nxt).all() and abs(np.corrcoef(many, nxt)[0, 1]) < 0.03


def test_inverse_cdf_sampling_follows_the_distribution():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, float("-inf"), 0.5])
    probs = torch.softmax(logits, 0)
    u = torch.from_numpy(uniforms(np.arange(40000, dtype=np.uint64), 0))
    picks = sample_tokens(probs.expand(len(u), -1), u)  # [40000]
    freq = torch.bincount(picks, minlength=6).double() / len(u)
    assert freq[4] == 0  # probability 0: never drawn
    assert torch.allclose(freq, probs.double(), atol=0.01)


def test_placeholder_tokens_are_never_drawn_but_logprobs_stay_the_models(loaded):
    processor = loaded.processor
    banned = placeholder_ids(processor)
    assert banned == sorted(processor.tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>"]))
    vocab = len(processor.tokenizer)
    scores = torch.zeros(4, vocab)
    scores[:, banned[0]] = 5.0  # by far the likeliest token
    sampler = _SeededSampler(SamplingSettings(n=4), [1, 2, 3, 4], [], processor.tokenizer, banned=banned)
    out = sampler.process(None, scores.clone())
    chosen = sampler.tokens[0]
    assert not any(t in banned for t in chosen.tolist())
    assert torch.equal(out.argmax(-1), chosen) and torch.isinf(out).sum() == 4 * (vocab - 1)
    expected = torch.log_softmax(torch.zeros(vocab).index_fill(0, torch.tensor(banned[:1]), 5.0), 0)[chosen]
    assert torch.allclose(sampler.logps[0], expected, atol=1e-6)


# ---------------------------------------------------------------- log-probs


def test_logprob_check_mode_agrees_and_catches_a_change(tmp_path, dataset, tiny_model_dir, loaded):
    out = tmp_path / "warped.parquet"
    result = rollout.run(_config(dataset, tiny_model_dir, out, temperature=0.7, top_k=40, top_p=0.9,
                                 check_logprobs=4), progress=False)
    assert result.max_logprob_diff is not None and result.max_logprob_diff < 1e-4
    # The check reads the file: a stored value moved by 0.01 is reported.
    art = read_table(out, "rollouts")
    rows = art.table.to_pylist()
    rows[1]["logprobs"] = [v - 0.01 if i == 0 else v for i, v in enumerate(rows[1]["logprobs"])]
    bad = tmp_path / "bad.parquet"
    write_table(bad, "rollouts", rows, art.manifest)
    assert check_logprobs(bad, loaded.model, loaded.processor, 1) == pytest.approx(0.01, abs=1e-4)


def test_stop_strings_end_completions(tmp_path, dataset, tiny_model_dir, loaded):
    out = tmp_path / "stop.parquet"
    result = rollout.run(_config(dataset, tiny_model_dir, out, stop=("a",), max_new_tokens=12), progress=False)
    tok = loaded.processor.tokenizer
    eos = set(tok.convert_tokens_to_ids(["<|im_end|>"]))
    stopped = 0
    for r in read_table(out, "rollouts").table.to_pylist():
        ids, text = r["completion_ids"], tok.decode(r["completion_ids"], skip_special_tokens=False)
        if r["finish_reason"] == "stop" and ids[-1] not in eos:
            stopped += 1
            assert "a" in text and "a" not in tok.decode(ids[:-1], skip_special_tokens=False)
        elif r["finish_reason"] == "length":
            assert "a" not in text and r["num_tokens"] == 12
    assert stopped > 0 and result.finish_reasons.get("stop", 0) >= stopped


# ---------------------------------------------------------------- batching


def test_batches_back_off_on_out_of_memory():
    seen = []

    def fn(batch):
        seen.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x * 10 for x in batch]

    got = list(in_batches(list(range(10)), 8, fn, back_off=True))
    assert seen[:3] == [8, 4, 2] and [len(b) for b, _, _ in got] == [2, 2, 2, 2, 2]
    assert [x for _, r, _ in got for x in r] == [x * 10 for x in range(10)]
    with pytest.raises(ValueError, match="out of memory at --batch-size 8; pass a smaller --batch-size"):
        list(in_batches(list(range(10)), 8, fn, back_off=False))
    with pytest.raises(ValueError, match="out of memory with one prompt per batch"):
        list(in_batches([1], 1, lambda b: fn(b * 5), back_off=True))
    with pytest.raises(KeyError):  # anything else is not an out-of-memory
        list(in_batches([1, 2], 2, lambda b: {}[0], back_off=True))


def test_batch_size_setting():
    assert rollout.Config(dataset="d", model="m", out="o").batch_size == "auto"
    assert rollout.Config(dataset="d", model="m", out="o", batch_size="16").batch_size == 16
    for bad in ("0", "many", 0, -2):
        with pytest.raises(ValueError, match="batch_size must be a positive number or 'auto'"):
            rollout.Config(dataset="d", model="m", out="o", batch_size=bad)


# ---------------------------------------------------------------- resume


def _rollout_cmd(dataset, model, out, *extra: str, batch_size: int = 1) -> list[str]:
    return [sys.executable, "-m", "rftcli", "rollout", "-d", str(dataset), "-m", str(model), "--out", str(out),
            "-n", "2", "--max-new-tokens", "12", "--batch-size", str(batch_size), "--split", "all", "--seed", "5",
            *extra]


def test_resume_after_a_kill_gives_the_same_table(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "killed.parquet"
    parts = work_folder(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kill_once_shards(_rollout_cmd(dataset, tiny_model_dir, out), parts, 3, env)
    assert not out.exists()
    finished = {g for p in parts.glob("part-*.parquet") for g in pq.read_table(p).column("group_index").to_pylist()}
    assert 3 <= len(finished) < 48

    # Other settings: refused, and the work folder is left as it was.
    before = sorted(p.name for p in parts.iterdir())
    changed = subprocess.run(_rollout_cmd(dataset, tiny_model_dir, out, "--temperature", "0.5"), env=env,
                             capture_output=True, text=True)
    assert changed.returncode == 2
    assert "holds a partial run with other settings (settings.temperature: 1.0 then, 0.5 now)" in changed.stderr
    assert sorted(p.name for p in parts.iterdir()) == before

    # The same command: resumes, skipping the finished prompts.
    resumed = subprocess.run(_rollout_cmd(dataset, tiny_model_dir, out), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(rf"resumed prompts\s*│\s*{len(finished)}\s", resumed.stdout), resumed.stdout
    assert out.exists() and not parts.exists()

    # The reference runs the same way (a process with the same thread count): float reductions, and so
    # the stored log-probs, depend on the number of threads.
    whole = tmp_path / "whole.parquet"
    reference = subprocess.run(_rollout_cmd(dataset, tiny_model_dir, whole), env=env, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    assert pq.read_table(out).equals(pq.read_table(whole))


# ---------------------------------------------------------------- the shard store


def _dataset_rows(dataset, n):
    return read_table(dataset, "dataset").table.slice(0, n).to_pylist()


def test_shards_resume_refuse_discard_and_merge(tmp_path, dataset):
    rows = _dataset_rows(dataset, 6)
    out = tmp_path / "t.parquet"
    key = {"settings": {"n": 1}}
    with ShardedOutput(out, "dataset", key, ("id",)) as shards:
        shards.write(rows[3:6], {"stage": "test"})
        shards.write(rows[0:2], {"stage": "test"})
    (work_folder(out) / ".part-000002.parquet.tmp-dead").write_bytes(b"half a shard")  # a write cut short
    with ShardedOutput(out, "dataset", key, ("id",)) as shards:
        assert shards.resumed and shards.done == {(r["id"],) for r in rows[:2] + rows[3:]}
        assert not list(work_folder(out).glob(".part-*"))
        with pytest.raises(FileExistsError, match="another process is writing this output"):
            ShardedOutput(out, "dataset", key, ("id",)).__enter__()
        assert shards.write(rows[2:3], {"stage": "test"}).name == "part-000002.parquet"
    with pytest.raises(ValueError, match=r"settings.n: 1 then, 2 now\); rerun with the same settings"):
        with ShardedOutput(out, "dataset", {"settings": {"n": 2}}, ("id",)):
            pass
    with ShardedOutput(out, "dataset", key, ("id",)) as shards:
        assert len(shards.done) == 6
        shards.finish({"stage": "test"}, sort_by=["id"])
    assert not work_folder(out).exists()
    merged = read_table(out, "dataset")
    assert merged.table.column("id").to_pylist() == sorted(r["id"] for r in rows)
    assert merged.manifest == {"stage": "test"}

    # A leftover from other settings is discarded with overwrite.
    out2 = tmp_path / "u.parquet"
    with ShardedOutput(out2, "dataset", key, ("id",)) as shards:
        shards.write(rows[:1], {})
    with ShardedOutput(out2, "dataset", {"settings": {"n": 2}}, ("id",), overwrite=True) as shards:
        assert not shards.done and not shards.parts()
    assert json.loads((work_folder(out2) / "run.json").read_text())["key"] == {"settings": {"n": 2}}


def test_existing_output_is_refused_before_any_work(tmp_path, base_run, dataset, tiny_model_dir):
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        rollout.run(_config(dataset, tiny_model_dir, base_run[0]), progress=False)
    assert not work_folder(base_run[0]).exists()


# ---------------------------------------------------------------- the command and the vllm backend


def test_cli_prints_the_summary(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "cli.parquet"
    result = CliRunner().invoke(app, ["rollout", "-d", str(dataset), "-m", str(tiny_model_dir), "--out", str(out),
                                      "-n", "2", "--limit", "3", "--max-new-tokens", "5", "--stop", "e",
                                      "--check-logprobs", "1"])
    assert result.exit_code == 0, result.output
    for label in ("resumed prompts", "batch size", "tokens/s", "tokens p50", "tokens p95", "max |logprob diff|"):
        assert label in result.output
    manifest = read_table(out, "rollouts").manifest
    assert manifest["config"]["stop"] == ["e"] and manifest["config"]["batch_size"] == "auto"


def _vllm_installed() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_vllm_installed(), reason="checks the message shown when vLLM is missing")
def test_vllm_backend_without_vllm_is_one_clean_line(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "v.parquet"
    result = CliRunner().invoke(app, ["rollout", "-d", str(dataset), "-m", str(tiny_model_dir), "--out", str(out),
                                      "--backend", "vllm"])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: the vllm backend needs vLLM, the 'vllm' extra of rftcli (CUDA GPUs "
                                     "only): pip install vllm, or use --backend hf")
    assert not out.exists() and not work_folder(out).exists()
