"""Calibrate `rftcli plan` on this CPU: models at the published widths of bench/configs with few layers, random
weights, one online `train-grpo` step (QLoRA and bf16 LoRA) and measured against the plan.

Usage:
    python bench/plan_calibration.py --configs qwen2.5-vl-3b-instruct --layers 1 --modes qlora lora \
        --repeats 3 --num-generations 2 --max-completion-length 8 --results bench/RESULTS.md

Each model keeps its config's widths (hidden, MLP, heads, vocabulary, vision width) with `--layers` decoder
layers and as many vision blocks, built in bf16 around rftcli's built-in tokenizer and processor. Each
measurement runs in its own process: `rftcli.stages.train_grpo.run` with one step, under
torch.profiler with profile_memory=True. Measured peak = the bytes of the model's tensors when training begins
(parameters, buffers, 4-bit quantisation states) + the peak of the allocator's cumulative allocations between
the start and the end of training (generation, backward and the optimizer step). That is the allocator's figure, which on a GPU
is what `torch.cuda.max_memory_allocated` reports; peak RSS is recorded beside it. The prediction is
`rftcli.plan.plan` for the same cut config, the same settings (device cpu: no CUDA context or allocator margin)
and the run's real worst-case prompt length in tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS = ROOT / "bench" / "configs"
MARK_BEGIN = "<!-- plan_calibration: begin -->"
MARK_END = "<!-- plan_calibration: end -->"


def cut_config(name: str, layers: int) -> dict:
    """The published config with `layers` decoder layers and as many vision blocks."""
    config = json.loads((CONFIGS / name / "config.json").read_text())
    text = config.get("text_config", config)
    text["num_hidden_layers"] = layers
    if "max_window_layers" in text:
        text["max_window_layers"] = layers
    vision = config["vision_config"]
    vision["depth"] = layers
    if "fullatt_block_indexes" in vision:
        vision["fullatt_block_indexes"] = [layers - 1]
    if "deepstack_visual_indexes" in vision:
        vision["deepstack_visual_indexes"] = list(range(min(layers, len(vision["deepstack_visual_indexes"]))))
    return config


def build_model(name: str, layers: int, folder: Path, weights: bool = True) -> None:
    """Random bf16 weights at the widths of `name` (without `weights`: only config and processor), rftcli's
    built-in tokenizer and processor."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from rftcli import loading

    loading._quiet_transformers()
    src = loading.resolve("builtin:tiny-qwen2.5-vl")
    processor = AutoProcessor.from_pretrained(src)
    tok = processor.tokenizer
    config = cut_config(name, layers)
    ids = {key: tok.convert_tokens_to_ids(token) for key, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    config.update(ids)
    for key in ("bos_token_id", "eos_token_id"):
        config.pop(key, None)
        config.get("text_config", {}).pop(key, None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    if weights:
        cfg = AutoConfig.from_pretrained(folder)
        torch.manual_seed(0)
        torch.set_default_dtype(torch.bfloat16)  # no fp32 copy of a 150k x 3.5k embedding
        model = AutoModelForImageTextToText.from_config(cfg)
        torch.set_default_dtype(torch.float32)
        model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
        model.generation_config.pad_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
        model.save_pretrained(folder)
    if config["model_type"] == "qwen3_vl":
        from transformers import Qwen3VLProcessor

        processor = Qwen3VLProcessor(image_processor=processor.image_processor, tokenizer=tok, video_processor=None,
                                     chat_template=processor.chat_template)
        processor.image_processor.patch_size = config["vision_config"]["patch_size"]
    processor.save_pretrained(folder)


def tensor_bytes(model) -> int:
    """Bytes of every tensor the model holds: parameters, buffers, and bitsandbytes' quantisation states."""
    import torch

    seen: dict[int, int] = {}

    def add(t):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()

    for t in list(model.parameters()) + list(model.buffers()):
        add(t)
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        while state is not None:
            for key in ("absmax", "code", "offset"):
                add(getattr(state, key, None))
            state = getattr(state, "state2", None)
    return sum(seen.values())


class AllocatorPeak:
    """torch.profiler over a window: the peak of the cumulative CPU allocations from the window's start."""

    def __init__(self):
        from torch.profiler import ProfilerActivity, profile

        self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)

    def __enter__(self):
        self.prof.__enter__()
        return self

    def __exit__(self, *exc):
        self.prof.__exit__(*exc)
        events = [e for e in self.prof.profiler.kineto_results.events() if e.name() == "[memory]"
                  and e.device_type().name == "CPU"]
        events.sort(key=lambda e: e.start_ns())
        running = peak = 0
        for e in events:
            running += e.nbytes()
            peak = max(peak, running)
        self.peak, self.net = peak, running  # net: bytes still held at the window's end
        return False


def measure(args) -> dict:
    """One measurement in this process (called through --measure). A train-grpo step is split in two windows
    at its first loss: generation (with scoring) and training (loss, backward, optimizer step); a rollout is one
    window from the loaded model to the written table."""
    import torch

    torch.manual_seed(0)
    if args.mode == "rollout":
        return measure_rollout(args)
    import transformers

    from rftcli import training
    from rftcli.stages import train_grpo

    result: dict = {}

    class Window(transformers.TrainerCallback):
        def on_train_begin(self, _args, state, control, model=None, **kw):
            result["model_bytes"] = tensor_bytes(model)
            self.window = AllocatorPeak().__enter__()

        def split(self):
            """At the first loss: close the generation window, open the training one."""
            if "generation_peak" in result:
                return
            self.window.__exit__(None, None, None)
            result["generation_peak"], result["generation_net"] = self.window.peak, self.window.net
            self.window = AllocatorPeak().__enter__()

        def on_train_end(self, *_a, **_k):
            self.window.__exit__(None, None, None)
            # The training window starts from what the generation window left allocated.
            result["training_peak"] = result["generation_net"] + self.window.peak
            result["allocated_peak"] = max(result["generation_peak"], result["training_peak"])

    real_attach = training.attach_progress

    def attach(trainer, kind):
        window = Window()
        trainer.add_callback(window)
        compute_loss = trainer.compute_loss

        def split_then_loss(*a, **kw):
            window.split()
            return compute_loss(*a, **kw)

        trainer.compute_loss = split_then_loss
        return real_attach(trainer, kind)

    training.attach_progress = attach  # the stage imports it from rftcli.training when it runs
    train_grpo.run(train_grpo.Config(
        dataset=Path(args.dataset), model=args.model, out=Path(args.out), num_generations=args.num_generations,
        max_completion_length=args.max_completion_length, batch_size=args.batch_size, max_steps=1, limit=args.limit,
        load_in_4bit=args.mode == "qlora", gradient_checkpointing=args.gradient_checkpointing, dtype="bfloat16",
        lora_r=args.lora_r, learning_rate=1e-4, logging_steps=1, seed=0, overwrite=True))
    return result


def measure_rollout(args) -> dict:
    """`rftcli rollout` of one batch (batch_size / G prompts, G completions each) with bf16 weights."""
    from rftcli.stages import rollout

    result: dict = {}
    real_init = rollout.HFPolicy.__init__

    def init(self, config):
        real_init(self, config)
        result["model_bytes"] = tensor_bytes(self.model)
        result["window"] = AllocatorPeak().__enter__()

    rollout.HFPolicy.__init__ = init
    prompts = args.batch_size // args.num_generations
    rollout.run(rollout.Config(dataset=Path(args.dataset), model=args.model, out=Path(args.out),
                               num_generations=args.num_generations, max_new_tokens=args.max_completion_length,
                               batch_size=prompts, limit=prompts, dtype="bfloat16", seed=0, overwrite=True),
                progress=False)
    window = result.pop("window")
    window.__exit__(None, None, None)
    result["generation_peak"] = result["allocated_peak"] = window.peak
    return result


def prompt_tokens(model: str, dataset: Path, limit: int) -> tuple[int, list[dict]]:
    """The worst-case prompt of the rows used in real tokens (the processor's count), and the rows."""
    from rftcli.generation import prompt_length
    from rftcli.loading import load_processor
    from rftcli.stages.rollout import used_rows

    processor = load_processor(model)
    rows = used_rows(dataset, "train", limit).to_pylist()
    tokens = max(prompt_length(processor, row) for row in rows)
    return tokens, rows


def predict(name: str, layers: int, mode: str, settings_args, model: str, dataset: Path):
    from rftcli import plan

    config = cut_config(name, layers)
    shape = plan.shape(config)
    rollout = mode == "rollout"
    settings = plan.Settings(stage="rollout" if rollout else "train-grpo", batch_size=settings_args.batch_size,
                             grad_accum=1, num_generations=settings_args.num_generations,
                             max_completion_length=settings_args.max_completion_length,
                             lora_r=settings_args.lora_r, load_in_4bit=mode == "qlora",
                             gradient_checkpointing=settings_args.gradient_checkpointing and not rollout,
                             device="cpu")
    limit = settings_args.batch_size // settings_args.num_generations if rollout else settings_args.limit
    tokens, rows = prompt_tokens(model, dataset, limit)
    estimate = plan.worst_case(rows, shape, settings)
    sample = plan.Sample(prompt_tokens=tokens, image_tokens=estimate.image_tokens, patches=estimate.patches,
                         source="measured prompt")
    return plan.plan(config, settings, sample)


def repredict(args) -> None:
    """The --rows file's predictions again, from the current rftcli.plan (the measured columns are kept)."""
    from types import SimpleNamespace

    from rftcli.plan import GIB
    from rftcli.stages import prepare_data

    rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = tmp / "counting.parquet"
        prepare_data.run(prepare_data.Config(out=dataset, task="counting", num=16, test_fraction=0.25))
        for row in rows:
            folder = tmp / f"{row['config']}-{row['layers']}"
            if not folder.exists():
                build_model(row["config"], row["layers"], folder, weights=False)
            settings = SimpleNamespace(batch_size=row["batch_size"], num_generations=row["num_generations"],
                                       max_completion_length=row["max_completion_length"], lora_r=row.get("lora_r", 16),
                                       gradient_checkpointing=row["gradient_checkpointing"], limit=row.get("limit", 2))
            predicted = predict(row["config"], row["layers"], row["mode"], settings, str(folder), dataset)
            sample = [predicted.sample.prompt_tokens, predicted.sample.image_tokens, predicted.sample.patches]
            if row.get("sample", sample) != sample:
                raise SystemExit(f"{row['config']} {row['layers']} {row['mode']}: the worst-case sample changed")
            row.update(sample=sample, predicted=predicted.peak / GIB, error=(predicted.peak / GIB - row["measured"])
                       / row["measured"], parts={n: round(b / GIB, 3) for n, b, _ in predicted.parts})
            for name, size in predicted.phases:
                if name in row.get("phases", {}):
                    phase = row["phases"][name]
                    phase.update(predicted=size / GIB, error=(size / GIB - phase["measured"]) / phase["measured"])
            print(json.dumps(row), flush=True)
    args.rows.write_text("".join(json.dumps(row) + "\n" for row in rows))
    if args.results is not None:
        write_results(args.results, render(rows, args))


def versions() -> str:
    import importlib.metadata as md

    return ", ".join(f"{p} {md.version(p)}" for p in ("torch", "transformers", "trl", "peft", "bitsandbytes"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=[p.name for p in sorted(CONFIGS.iterdir()) if p.is_dir()])
    parser.add_argument("--layers", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--modes", nargs="+", default=["qlora", "lora"], choices=["qlora", "lora", "rollout"],
                        help="qlora and lora: one train-grpo step; rollout: one rollout batch (bf16).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-generations", type=int, default=2)
    parser.add_argument("--max-completion-length", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--results", type=Path, default=None, help="Markdown file whose calibration section to write.")
    parser.add_argument("--rows", type=Path, default=None,
                        help="JSON-lines file each measured row is appended to; the table shows all its rows.")
    parser.add_argument("--repredict", action="store_true",
                        help="Recompute the predictions of the --rows file with the current plan (the measurements "
                             "stay) and write the table; builds only each config's processor.")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        result = measure(args)
        result["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print("RESULT " + json.dumps(result))
        return

    from rftcli.plan import GIB
    from rftcli.stages import prepare_data

    if args.repredict:
        if args.rows is None:
            raise SystemExit("--repredict needs --rows")
        repredict(args)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = tmp / "counting.parquet"
        prepare_data.run(prepare_data.Config(out=dataset, task="counting", num=16, test_fraction=0.25))
        for name in args.configs:
            for layers in args.layers:
                folder = tmp / f"{name}-{layers}"
                start = time.perf_counter()
                build_model(name, layers, folder)
                print(f"built {name} with {layers} layer(s) in {time.perf_counter() - start:.0f} s", flush=True)
                for mode in args.modes:
                    predicted = predict(name, layers, mode, args, str(folder), dataset)
                    measured, rss, seconds, phases = [], [], [], {}
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        out = tmp / "ckpt"
                        cmd = [sys.executable, __file__, "--measure", "--mode", mode, "--model", str(folder),
                               "--dataset", str(dataset), "--out", str(out),
                               "--num-generations", str(args.num_generations),
                               "--max-completion-length", str(args.max_completion_length),
                               "--batch-size", str(args.batch_size), "--limit", str(args.limit),
                               "--lora-r", str(args.lora_r)] + (
                            ["--gradient-checkpointing"] if args.gradient_checkpointing else [])
                        proc = subprocess.run(cmd, capture_output=True, text=True,
                                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
                        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                        if proc.returncode or not line:
                            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                            raise SystemExit(f"measurement failed: {name} {layers} {mode}")
                        result = json.loads(line[0][7:])
                        measured.append(result["model_bytes"] + result["allocated_peak"])
                        for phase in ("generation", "training"):
                            if f"{phase}_peak" in result:
                                phases.setdefault(phase, []).append(result["model_bytes"] + result[f"{phase}_peak"])
                        rss.append(result["rss"])
                        seconds.append(time.perf_counter() - start)
                        if out.exists():
                            subprocess.run(["rm", "-rf", str(out), f"{out}.work"], check=False)
                    med = statistics.median(measured)
                    row = dict(config=name, layers=layers, mode=mode, num_generations=args.num_generations,
                               max_completion_length=args.max_completion_length, batch_size=args.batch_size,
                               gradient_checkpointing=args.gradient_checkpointing,
                               model_gib=result["model_bytes"] / GIB, allocated_gib=result["allocated_peak"] / GIB,
                               predicted=predicted.peak / GIB,
                               measured=med / GIB, low=min(measured) / GIB, high=max(measured) / GIB,
                               error=(predicted.peak - med) / med, rss=max(rss) / GIB,
                               seconds=statistics.median(seconds), repeats=args.repeats,
                               parts={n: round(b / GIB, 3) for n, b, _ in predicted.parts},
                               phases={name: dict(predicted=size / GIB,
                                                  measured=statistics.median(phases[name]) / GIB,
                                                  error=(size - statistics.median(phases[name]))
                                                  / statistics.median(phases[name]))
                                       for name, size in predicted.phases if name in phases})
                    row["command"] = command(args)
                    row.update(limit=args.limit, lora_r=args.lora_r, sample=[predicted.sample.prompt_tokens,
                                                                              predicted.sample.image_tokens,
                                                                              predicted.sample.patches])
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.rows is not None:
                        with args.rows.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                subprocess.run(["rm", "-rf", str(folder)], check=False)
    if args.rows is not None:  # every row measured so far, by this and earlier invocations
        rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()]
    table = render(rows, args)
    print(table)
    if args.results is not None:
        write_results(args.results, table)


def write_results(path: Path, table: str) -> None:
    """Put `table` between the calibration markers of the Markdown file `path` (appended when it has none)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if MARK_BEGIN in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + table + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + table
    path.write_text(text)


def command(args) -> str:
    """The invocation that measured a row, without --rows and --results."""
    return (f"python bench/plan_calibration.py --configs {' '.join(args.configs)} --layers "
            f"{' '.join(map(str, args.layers))} --modes {' '.join(args.modes)} --repeats {args.repeats} "
            f"--num-generations {args.num_generations} --max-completion-length {args.max_completion_length} "
            f"--batch-size {args.batch_size}{' --gradient-checkpointing' if args.gradient_checkpointing else ''}")


def render(rows: list[dict], args) -> str:
    import platform

    lines = [MARK_BEGIN, f"## rftcli plan against measured peak memory, CPU ({time.strftime('%Y-%m-%d', time.gmtime())})",
             "",
             f"Device: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared). Versions: "
             f"{versions()}. Commands: "
             + "; ".join(f"`{c}`" for c in dict.fromkeys(r.get("command", "") for r in rows) if c)
             + " (each with `--rows bench/plan_calibration.jsonl --results bench/RESULTS.md`; the table holds every row of the "
             "--rows file; each row's own settings are in its columns). Random bf16 weights at the published widths with few "
             "layers; qlora and lora: one online train-grpo step (NF4 or bf16 base); rollout: one `rftcli rollout` batch "
             "(bf16). Measured: model tensors at the start + the peak of the allocator's cumulative allocations "
             "(torch.profiler, profile_memory=True), median and min-max over the repeats; the train-grpo step is split at "
             "its first loss into the generation phase (generation and scoring) and the training phase (loss, backward, "
             "optimizer step), each against the plan's phase of the same name. Predicted: `rftcli.plan` for the same "
             "settings on CPU.",
             "",
             "| config | layers | mode | G x completion, batch | predicted peak GiB (weights; rest) "
             "| measured peak GiB (min-max) | error | generation phase: predicted / measured GiB (error) "
             "| training phase: predicted / measured GiB (error) | model tensors GiB | repeats | peak RSS GiB | s/run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def phase(r, name):
        p = (r.get("phases") or {}).get(name)
        return f"{p['predicted']:.3f} / {p['measured']:.3f} ({p['error']:+.1%})" if p else "-"

    for r in rows:
        rest = r["predicted"] - r["parts"]["weights"]
        settings = (f"{r['num_generations']} x {r['max_completion_length']}, {r['batch_size']}"
                    + (", ckpt" if r["gradient_checkpointing"] else ""))
        lines.append(f"| {r['config']} | {r['layers']} | {r['mode']} | {settings} | {r['predicted']:.3f} "
                     f"({r['parts']['weights']:.3f}; {rest:.3f}) | {r['measured']:.3f} ({r['low']:.3f}-{r['high']:.3f}) "
                     f"| {r['error']:+.1%} | {phase(r, 'generation')} | {phase(r, 'training')} | {r['model_gib']:.3f} "
                     f"| {r['repeats']} | {r['rss']:.2f} | {r['seconds']:.0f} |")
    lines += ["", MARK_END]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
