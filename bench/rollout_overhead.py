"""Rollout overhead: `rftcli.stages.rollout.run` (hf backend) tokens/s against a bare `model.generate` loop
over the same prompts, batch size and sampling settings, in the same process, on the built-in tiny model.

    OMP_NUM_THREADS=1 python bench/rollout_overhead.py                 # 64 prompts x 8 x 48 tokens
    OMP_NUM_THREADS=1 python bench/rollout_overhead.py --prompts 32 --repeats 5

Both sides generate fixed-length completions (eos ignored), so they do the same work. The bare loop
encodes each batch with the processor and calls `generate(do_sample=True)`; nothing else. Rollout runs
the whole stage: reading the dataset, hashing the model, estimating and sorting prompt lengths, seeded
sampling with per-token log-probs, a shard per batch, the final table. Runs alternate (bare, rollout,
bare, ...) after one warm-up of each; the figures are medians over repeats of:

    loop ratio    rollout tokens / (encode + generate seconds inside rollout)  vs  bare tokens/s
    stage ratio   rollout tokens / (stage wall time - model loading)           vs  bare tokens/s
    end-to-end    rollout tokens / stage wall time, model loading included     vs  bare tokens/s
    GPU path      the seeded sampler with `generate` expanding prompts to n sequences (what rollout does
                  on a GPU), as a bare loop of `generate_encoded` calls            vs  bare tokens/s

On a CPU rollout encodes each prompt n times and lets `generate` decode greedily over the sampler's
one-hot, skipping the softmax + multinomial that bare `generate(do_sample=True)` pays every step (see
`rftcli.generation.repeat_prompts`); that is why the stage can beat the bare loop here. The GPU-path
line shows the sampler's overhead when that saving is not taken.

Target (issue 5): stage ratio >= 0.9.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def bare_generate(model, processor, rows, n: int, max_new_tokens: int, batch_size: int) -> tuple[int, float]:
    from rftcli.generation import encode_prompts

    device = next(model.parameters()).device
    tokens = 0
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            inputs = encode_prompts(processor, rows[i:i + batch_size], device)
            out = model.generate(**inputs, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 num_return_sequences=n, max_new_tokens=max_new_tokens, eos_token_id=[],
                                 pad_token_id=processor.tokenizer.pad_token_id)
            tokens += out[:, inputs["input_ids"].shape[1]:].numel()  # [B*n, T], fixed length
    return tokens, time.perf_counter() - start


def gpu_path(model, processor, rows, n: int, max_new_tokens: int, batch_size: int) -> tuple[int, float]:
    from rftcli.generation import SamplingSettings, encode_prompts, generate_encoded, row_seed

    settings = SamplingSettings(n=n, max_new_tokens=max_new_tokens, ignore_eos=True)
    device = next(model.parameters()).device
    tokens = 0
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = rows[i:i + batch_size]
            inputs = encode_prompts(processor, batch, device)
            seeds = [row_seed(0, r["id"], j) for r in batch for j in range(n)]
            tokens += sum(len(s.token_ids) for s in generate_encoded(model, processor, inputs, settings, seeds))
    return tokens, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("-n", "--num-generations", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (both sides)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", default="builtin:tiny-qwen2.5-vl")
    args = ap.parse_args()

    from rftcli import tiny_model
    from rftcli.loading import load_model
    from rftcli.schema import read_table
    from rftcli.stages import prepare_data, rollout

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        tmp = Path(tmp)
        data = tmp / "data.parquet"
        prepare_data.run(prepare_data.Config(out=data, task="counting", num=args.prompts))
        folder = str(tiny_model.build(args.model, tmp / "model")) if tiny_model.is_builtin(args.model) else args.model
        loaded = load_model(folder, dtype="float32")
        model, processor = loaded.model.eval(), loaded.processor
        rows = read_table(data, "dataset").table.to_pylist()

        def run_rollout(k: int) -> rollout.Result:
            cfg = rollout.Config(dataset=data, model=folder, out=tmp / f"rollouts-{k}.parquet", split="all",
                                 num_generations=args.num_generations, max_new_tokens=args.max_new_tokens,
                                 batch_size=args.batch_size, ignore_eos=True, seed=k, dtype="float32")
            return rollout.run(cfg, progress=False)

        bare_generate(model, processor, rows[:args.batch_size], args.num_generations, args.max_new_tokens,
                      args.batch_size)  # warm-up
        run_rollout(-1)
        gpu_path(model, processor, rows[:args.batch_size], args.num_generations, args.max_new_tokens,
                 args.batch_size)  # warm-up
        loop, stage, e2e, gpu, bare_rates, rollout_rates = [], [], [], [], [], []
        for k in range(args.repeats):
            tokens, seconds = bare_generate(model, processor, rows, args.num_generations, args.max_new_tokens,
                                            args.batch_size)
            bare = tokens / seconds
            r = run_rollout(k)
            assert r.generated_tokens == tokens, (r.generated_tokens, tokens)
            bare_rates.append(bare)
            rollout_rates.append(r.generated_tokens / (r.seconds - r.load_seconds))
            loop.append(r.tokens_per_s / bare)
            stage.append(r.generated_tokens / (r.seconds - r.load_seconds) / bare)
            e2e.append(r.generated_tokens / r.seconds / bare)
            g_tokens, g_seconds = gpu_path(model, processor, rows, args.num_generations, args.max_new_tokens,
                                           args.batch_size)
            gpu.append(g_tokens / g_seconds / bare)
            print(f"repeat {k}: bare {bare:.0f} tok/s ({seconds:.2f} s) | rollout loop {r.tokens_per_s:.0f} tok/s, "
                  f"stage {r.seconds:.2f} s (load {r.load_seconds:.2f} s, generate {r.generate_seconds:.2f} s) | "
                  f"GPU path {g_tokens / g_seconds:.0f} tok/s")

    med = statistics.median
    print(f"\ncommand: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python {' '.join(sys.argv)}")
    print(f"workload: {args.prompts} prompts x {args.num_generations} samples x {args.max_new_tokens} tokens, "
          f"batch {args.batch_size} prompts, model {args.model}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"bare generate   {med(bare_rates):8.0f} tokens/s (median)")
    print(f"rollout stage   {med(rollout_rates):8.0f} tokens/s (median, model loading excluded)")
    print(f"loop ratio      {med(loop):.3f}   (target >= 0.9 applies to the stage ratio)")
    print(f"stage ratio     {med(stage):.3f}   per repeat: {', '.join(f'{x:.3f}' for x in stage)}")
    print(f"end-to-end      {med(e2e):.3f}   (model loading included)")
    print(f"GPU path        {med(gpu):.3f}   (sampler with generate's own expansion, no stage)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
