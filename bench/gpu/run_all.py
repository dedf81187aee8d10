"""Real-size GPU figures (issue 10): Qwen2.5-VL-3B- and 7B-sized models with random weights.

    python bench/gpu/run_all.py --out $OUT                 # on a GPU: 3B and 7B, every figure
    python bench/gpu/run_all.py --out $OUT --sizes 3b      # one size
    OMP_NUM_THREADS=1 python bench/gpu/run_all.py --smoke --out /tmp/gpu-smoke   # CPU, same code paths, seconds

Writes `<out>/results.json` (every figure, with device, date, versions and command) and `<out>/results.md`
(the same as a markdown table). Nothing is downloaded: each model is built from the published
configuration values below (random weights, bf16), with the built-in tiny model's tokenizer and processor
(ids past its 1k vocabulary decode to nothing, which no figure here depends on).

Figures per size:
- rollout vs bare generate (issue 5): `rftcli rollout` (hf backend, whole stage, model loading excluded)
  tokens/s over bench/rollout_overhead.py's bare `model.generate` loop, 16 prompts x 8 samples x 256
  fixed-length tokens, 8 prompts a batch, one 448x448 image each, bf16; median of 2 alternating repeats.
- decode floor: weight bytes / memory bandwidth (bandwidth from timing a large device-to-device copy):
  the fastest one decoding step over all weights can be; tokens/s floor at batch B = B / step time.
- rollout tokens/s: rftcli's hf backend (`rftcli.generation.generate_encoded`), fixed length
  (`ignore_eos`), one 448x448 image per prompt, bf16 and 4-bit (NF4), and the fraction of the floor.
- train-grpo step (online, `rftcli.stages.train_grpo.run`): QLoRA and LoRA bf16, G=8, 512 completion
  tokens, one 448x448 image: peak memory, median step time, and the mean completion length TRL saw
  (EOS cannot be switched off there; a random model over 152k tokens almost never draws it, and the
  length is recorded so a short run shows).
- sft-coldstart step (`rftcli.stages.sft_coldstart.run`), LoRA bf16: peak memory and step time.
In --smoke mode the sizes are the built-in tiny model's (vocab kept at 151936), on the CPU, with short
lengths; its figures check the script, they measure nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import shlex
import statistics
import sys
import time
from functools import partial
from pathlib import Path

# Published configurations (Hugging Face Qwen/Qwen2.5-VL-3B-Instruct and -7B-Instruct config.json).
VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
              spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
              tokens_per_second=2, hidden_act="silu")
SIZES = {
    "3b": dict(text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                         num_key_value_heads=2, vocab_size=151936, rms_norm_eps=1e-6, max_window_layers=70),
               vision=dict(VISION, out_hidden_size=2048), tie_word_embeddings=True),
    "7b": dict(text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                         num_key_value_heads=4, vocab_size=152064, rms_norm_eps=1e-6, max_window_layers=28),
               vision=dict(VISION, out_hidden_size=3584), tie_word_embeddings=False),
    # --smoke: the built-in tiny model's sizes, with a real vocabulary.
    "smoke": dict(text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=151936, rms_norm_eps=1e-6, max_window_layers=2),
                  vision=dict(VISION, depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                              fullatt_block_indexes=[1], out_hidden_size=64), tie_word_embeddings=False),
}  # fmt: skip
MROPE_SECTION = [16, 24, 24]  # both sizes: head_dim 128


def build_model(size: str, out: Path, device: str) -> Path:
    """Save a random-weight bf16 model of `size` with the tiny tokenizer/processor into `out`."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from rftcli import tiny_model
    from rftcli.loading import load_processor

    spec = SIZES[size]
    processor = load_processor("builtin:tiny-qwen2.5-vl")
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in tiny_model.QWEN_SPECIAL_TOKENS}
    special = dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    head_dim = spec["text"]["hidden_size"] // spec["text"]["num_attention_heads"]
    half = head_dim // 2
    mrope = MROPE_SECTION if half == 64 else [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    config = Qwen2_5_VLConfig(
        text_config=dict(spec["text"], max_position_embeddings=128000,
                         rope_parameters=dict(rope_type="default", rope_theta=1_000_000.0, mrope_section=mrope),
                         **special),
        vision_config=spec["vision"], image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec["tie_word_embeddings"])
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(**special)
    # Real-size images: 448x448 = 32x32 patches = 256 image tokens.
    processor.image_processor.max_pixels = 448 * 448
    processor.image_processor.min_pixels = 56 * 56
    model.save_pretrained(out)
    processor.save_pretrained(out)
    del model
    _free()
    return out


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bandwidth_gbs(device: str, gib: float) -> float:
    """Bytes moved per second by a device-to-device copy of `gib` GiB (read + write), best of 5."""
    import torch

    n = int(gib * 2**30)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(5):
        _sync()
        t = time.perf_counter()
        dst.copy_(src)
        _sync()
        best = min(best, time.perf_counter() - t)
    del src, dst
    _free()
    return 2 * n / best / 1e9


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _rows(n: int, image_size: int) -> list[dict]:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)).save(buf, "PNG")
        rows.append({"id": f"p{i}", "split": "train", "task": "counting", "system": None,
                     "prompt": "How many red squares are in the image?",
                     "images": [{"bytes": buf.getvalue(), "path": None}], "answer": "3", "answer_type": "number",
                     "choices": None, "reasoning": None, "response": "<answer>3</answer>", "metadata": None})
    return rows


def rollout_figures(folder: Path, *, load_in_4bit: bool, batch: int, tokens: int, image_size: int,
                    device: str, floor_gbs: float) -> dict:
    """Fixed-length hf-backend generation: tokens/s and its fraction of the decode floor at this batch."""
    from rftcli.generation import SamplingSettings, encode_prompts, generate_encoded
    from rftcli.loading import load_model

    _free()
    loaded = load_model(str(folder), dtype="bfloat16", load_in_4bit=load_in_4bit, device=device)
    loaded.model.eval()
    wbytes = weight_bytes(loaded.model)
    rows = _rows(batch, image_size)
    inputs = encode_prompts(loaded.processor, rows, device)
    settings = SamplingSettings(n=1, temperature=1.0, max_new_tokens=tokens, ignore_eos=True)
    warm = SamplingSettings(n=1, temperature=1.0, max_new_tokens=4, ignore_eos=True)
    generate_encoded(loaded.model, loaded.processor, inputs, warm, list(range(batch)))
    _sync()
    t = time.perf_counter()
    samples = generate_encoded(loaded.model, loaded.processor, inputs, settings, list(range(batch)))
    _sync()
    wall = time.perf_counter() - t
    generated = sum(len(s.token_ids) for s in samples)
    floor_tps = batch * floor_gbs * 1e9 / wbytes
    out = {"batch": batch, "new_tokens_each": tokens, "generated_tokens": generated, "seconds": round(wall, 3),
           "tokens_per_s": round(generated / wall, 1), "weight_bytes": wbytes,
           "floor_tokens_per_s": round(floor_tps, 1), "fraction_of_floor": round(generated / wall / floor_tps, 4),
           "peak_gpu_mb": _peak_gpu_mb()}
    del loaded
    _free()
    return out


def _rollout_overhead_module():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "rollout_overhead.py"
    spec = importlib.util.spec_from_file_location("rollout_overhead", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def overhead_figures(folder: Path, work: Path, *, prompts: int, n: int, tokens: int, batch: int, image_size: int,
                     device: str, repeats: int) -> dict:
    """Issue 5's ratio at this size: `rftcli rollout` (hf backend, the whole stage, model loading excluded)
    tokens/s over a bare `model.generate` loop (bench/rollout_overhead.py's) on the same prompts, batch,
    group size and fixed length, alternating bare / rollout after one warm-up of each; medians."""
    from rftcli.loading import load_model
    from rftcli.schema import write_table
    from rftcli.stages import rollout

    bench = _rollout_overhead_module()
    _free()
    rows = _rows(prompts, image_size)
    data = work / "overhead.parquet"
    write_table(data, "dataset", rows, {"task": "bench-gpu"}, overwrite=True)
    loaded = load_model(str(folder), dtype="bfloat16", device=device)
    model, processor = loaded.model.eval(), loaded.processor

    def run_rollout(k: int):
        return rollout.run(rollout.Config(dataset=data, model=str(folder), out=work / f"overhead-{k}.parquet",
                                          split="all", num_generations=n, max_new_tokens=tokens, batch_size=batch,
                                          ignore_eos=True, seed=k, dtype="bfloat16", overwrite=True), progress=False)

    bench.bare_generate(model, processor, rows[:batch], n, min(tokens, 8), batch)  # warm-ups
    run_rollout(-1)
    bare_rates, stage_rates = [], []
    for k in range(repeats):
        _sync()
        generated, seconds = bench.bare_generate(model, processor, rows, n, tokens, batch)
        bare_rates.append(generated / seconds)
        r = run_rollout(k)
        stage_rates.append(r.generated_tokens / (r.seconds - r.load_seconds))
    del loaded, model
    _free()
    ratios = [s / b for s, b in zip(stage_rates, bare_rates, strict=True)]
    return {"prompts": prompts, "group": n, "new_tokens_each": tokens, "batch_prompts": batch, "repeats": repeats,
            "bare_tokens_per_s": round(statistics.median(bare_rates), 1),
            "rollout_tokens_per_s": round(statistics.median(stage_rates), 1),
            "ratio": round(statistics.median(ratios), 4), "ratios": [round(x, 4) for x in ratios]}


def _peak_gpu_mb() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def _dataset(folder: Path, n: int, image_size: int) -> Path:
    from rftcli.schema import write_table

    path = folder / "data.parquet"
    write_table(path, "dataset", _rows(n, image_size), {"task": "bench-gpu"}, overwrite=True)
    return path


def _step_figures(metrics: Path) -> dict:
    logs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = [e for e in logs if "loss" in e and "train_runtime" not in e]
    peak = [e.get("memory/peak_gpu_mb", e.get("memory/peak_rss_mb")) for e in steps]
    step_times = [e["step_time"] for e in steps if "step_time" in e]
    lengths = [e["completions/mean_length"] for e in steps if "completions/mean_length" in e]
    runtime = [e["train_runtime"] for e in logs if "train_runtime" in e]
    return {"steps": len(steps),
            "peak_memory_mb": max((p for p in peak if p is not None), default=None),
            "peak_memory_kind": "gpu allocated" if any("memory/peak_gpu_mb" in e for e in steps) else "process rss",
            "step_time_s_median": round(statistics.median(step_times), 3) if step_times else None,
            "train_runtime_s": runtime[0] if runtime else None,
            "completion_mean_length": round(statistics.mean(lengths), 1) if lengths else None}


def grpo_figures(folder: Path, data: Path, work: Path, *, load_in_4bit: bool, generations: int, tokens: int,
                 steps: int) -> dict:
    from rftcli.stages import train_grpo

    _free()
    out = work / f"grpo-{'qlora' if load_in_4bit else 'lora'}"
    train_grpo.run(train_grpo.Config(
        dataset=data, model=str(folder), out=out, num_generations=generations, max_completion_length=tokens,
        batch_size=generations, max_steps=steps, logging_steps=1, learning_rate=1e-5, load_in_4bit=load_in_4bit,
        dtype="bfloat16", overwrite=True, seed=0))
    figures = _step_figures(out / "metrics.jsonl")
    _free()
    return figures


def sft_figures(folder: Path, data: Path, work: Path, *, batch: int, steps: int) -> dict:
    from rftcli.stages import sft_coldstart

    _free()
    out = work / "sft"
    sft_coldstart.run(sft_coldstart.Config(dataset=data, model=str(folder), out=out, max_steps=steps,
                                           batch_size=batch, logging_steps=1, dtype="bfloat16", overwrite=True))
    figures = _step_figures(out / "metrics.jsonl")
    # SFT logs neither peak memory nor step time: peak over the whole call, mean step from train_runtime.
    if figures["peak_memory_mb"] is None:
        import resource

        gpu = _peak_gpu_mb()
        figures["peak_memory_mb"] = gpu if gpu is not None else round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        figures["peak_memory_kind"] = "gpu allocated (whole call)" if gpu is not None else "process rss"
    if figures["step_time_s_median"] is None and figures["train_runtime_s"] and figures["steps"]:
        figures["step_time_s_mean"] = round(figures["train_runtime_s"] / figures["steps"], 3)
    _free()
    return figures


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "rftcli"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
    return f"cpu ({platform.processor() or platform.machine()})"


def to_markdown(result: dict) -> str:
    lines = [f"# GPU bench ({'smoke, CPU: checks the script, measures nothing' if result['smoke'] else 'measured'})",
             "", f"- device: {result['device']}", f"- date: {result['date']}",
             f"- versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}",
             f"- command: `{result['command']}`", f"- memory bandwidth (copy): {result['bandwidth_gbs']} GB/s", "",
             "| size | figure | value | detail |", "|---|---|---|---|"]
    for size, figs in result["sizes"].items():
        for name, fig in figs.items():
            if "error" in fig:
                lines.append(f"| {size} | {name} | failed | {fig['error']} |")
            elif name == "rollout_vs_generate":
                lines.append(f"| {size} | rollout / bare generate tokens/s (target >= 0.9) | {fig['ratio']} | "
                             f"rollout {fig['rollout_tokens_per_s']} vs bare {fig['bare_tokens_per_s']} tokens/s; "
                             f"{fig['prompts']} prompts x {fig['group']} x {fig['new_tokens_each']} tokens, batch "
                             f"{fig['batch_prompts']} prompts; per repeat {fig['ratios']} |")
            elif name.startswith("rollout"):
                lines.append(f"| {size} | {name} tokens/s | {fig['tokens_per_s']} | batch {fig['batch']} x "
                             f"{fig['new_tokens_each']} tokens; {fig['fraction_of_floor']:.1%} of floor "
                             f"{fig['floor_tokens_per_s']} tokens/s; weights {fig['weight_bytes'] / 2**30:.2f} GiB |")
            else:
                lines.append(f"| {size} | {name} peak memory MB ({fig['peak_memory_kind']}) | {fig['peak_memory_mb']} | "
                             f"step {fig['step_time_s_median'] or fig.get('step_time_s_mean')} s "
                             f"({'median' if fig['step_time_s_median'] else 'mean'}) over {fig['steps']} steps; "
                             f"completion mean length {fig.get('completion_mean_length')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", default="3b,7b", help="comma-separated: 3b, 7b")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, short lengths: checks the script")
    parser.add_argument("--rollout-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per training figure (median of all)")
    args = parser.parse_args(argv)

    import torch

    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if not args.smoke and device != "cuda":
        parser.error("no GPU: run with --smoke to check the script on a CPU")
    sizes = ["smoke"] if args.smoke else [s.strip() for s in args.sizes.split(",") if s.strip()]
    tokens, generations, image = (8, 2, 56) if args.smoke else (512, 8, 448)
    batch = 2 if args.smoke else args.rollout_batch
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"smoke": args.smoke, "device": device_name(device), "date": dt.datetime.now(dt.timezone.utc).isoformat(),
              "versions": versions(), "command": shlex.join([sys.executable, *sys.argv]),
              "bandwidth_gbs": round(bandwidth_gbs(device, 0.0625 if args.smoke else 4.0), 1), "sizes": {}}
    for size in sizes:
        work = args.out / f"work-{size}"
        work.mkdir(exist_ok=True)
        figs: dict[str, dict] = {}
        result["sizes"][size] = figs
        folder = build_model(size, work / "model", device)
        data = _dataset(work, max(4, generations // 2), image)
        floor = result["bandwidth_gbs"]
        roll = dict(batch=batch, tokens=tokens, image_size=image, device=device, floor_gbs=floor)
        jobs = {
            "rollout_vs_generate": partial(overhead_figures, folder, work, prompts=4 if args.smoke else 16,
                                           n=2 if args.smoke else 8, tokens=tokens // 2, batch=2 if args.smoke else 8,
                                           image_size=image, device=device, repeats=1 if args.smoke else 2),
            "rollout_bf16": partial(rollout_figures, folder, load_in_4bit=False, **roll),
            "rollout_4bit": partial(rollout_figures, folder, load_in_4bit=True, **roll),
            "grpo_qlora": partial(grpo_figures, folder, data, work, load_in_4bit=True, generations=generations,
                                  tokens=tokens, steps=args.steps),
            "grpo_lora_bf16": partial(grpo_figures, folder, data, work, load_in_4bit=False, generations=generations,
                                      tokens=tokens, steps=args.steps),
            "sft_lora_bf16": partial(sft_figures, folder, data, work, batch=generations, steps=args.steps),
        }
        for name, job in jobs.items():
            t = time.perf_counter()
            try:
                figs[name] = job()
            except Exception as exc:  # one failing figure (e.g. out of memory) must not lose the others
                figs[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            figs[name]["wall_s"] = round(time.perf_counter() - t, 1)
            print(f"[{size}] {name}: {json.dumps(figs[name])}", flush=True)
            (args.out / "results.json").write_text(json.dumps(result, indent=2))
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    (args.out / "results.md").write_text(to_markdown(result))
    print(to_markdown(result))
    failed = [f"{s}/{n}" for s, f in result["sizes"].items() for n, v in f.items() if "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
