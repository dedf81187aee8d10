"""GRPO step overhead: `rftcli train-grpo` online (`rftcli.stages.train_grpo.run`) against a bare TRL
`GRPOTrainer` script with the same settings, in the same process, on the built-in tiny model.

    OMP_NUM_THREADS=1 python bench/grpo_overhead.py                  # 12 steps x 3 repeats, G=4, 16 tokens
    OMP_NUM_THREADS=1 python bench/grpo_overhead.py --steps 20 --repeats 5

The bare script is what a user would write: load the model and processor, build `GRPOConfig` and a LoRA
config with the same values (same target layers, learning rate, schedule, group size, completion length,
loss type, batch, seed, gradient checkpointing off), pass the same reward functions (unwrapped) and call
`train()`. rftcli's stage
adds reading and hashing its inputs, the manifest, reward isolation (time limit and error capture per
call), the peak-memory log entry, a progress bar and the atomic output. Runs alternate (bare, rftcli,
bare, ...); the figures are medians over repeats of:

    step ratio   median of TRL's `step_time` (generation + rewards + loss + backward, per optimizer step,
                 first 2 steps left out) of rftcli / the same for the bare trainer
    run ratio    whole call of rftcli's `run` / bare script (load, build, train, save), wall seconds

Target (issue 6): step ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

WARMUP_STEPS = 2


def settings(args) -> dict:
    return dict(num_generations=args.num_generations, max_completion_length=args.max_completion_length,
                batch_size=args.batch_size, max_steps=args.steps, learning_rate=1e-3, logging_steps=1,
                limit=args.prompts, seed=0)


def bare_run(model_dir: Path, data: Path, out: Path, args) -> tuple[list[float], float]:
    """The bare script: TRL's GRPOTrainer, the same settings and reward functions, nothing else."""
    from transformers import TrainingArguments
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from rftcli.loading import load_model
    from rftcli.rewards.combine import load_rewards
    from rftcli.schema import read_table
    from rftcli.stages.rollout import select_split
    from rftcli.training import lora_config, lora_target_modules, trl_dataset

    s = settings(args)
    table = select_split(read_table(data, "dataset").table, "train").slice(0, s["limit"])
    dataset = trl_dataset(table, with_completion=False)
    rewards = load_rewards(["accuracy=1", "format=0.2"])
    start = time.perf_counter()
    loaded = load_model(str(model_dir))
    # TRL turns gradient checkpointing on by default; rftcli only with --gradient-checkpointing.
    ckpt = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
            else "gradient_checkpointing")
    config = GRPOConfig(**{ckpt: False}, output_dir=str(out), per_device_train_batch_size=s["batch_size"],
                        num_generations=s["num_generations"], max_completion_length=s["max_completion_length"],
                        learning_rate=s["learning_rate"], lr_scheduler_type="constant", max_steps=s["max_steps"],
                        logging_steps=1, seed=s["seed"], data_seed=s["seed"], loss_type="dapo", beta=0.0,
                        reward_weights=[r.weight for r in rewards], use_cpu=True, bf16=False, report_to=[],
                        save_strategy="no", remove_unused_columns=False, disable_tqdm=True, log_completions=False)
    peft = lora_config(16, 32, 0.0, target_modules=lora_target_modules(loaded.model))
    trainer = GRPOTrainer(model=loaded.model, reward_funcs=[r.fn for r in rewards], args=config,
                          train_dataset=dataset, processing_class=loaded.processor, peft_config=peft)
    trainer.remove_callback(PrinterCallback)  # keep the terminal readable; not part of the step time
    trainer.train()
    trainer.model.save_pretrained(out)
    wall = time.perf_counter() - start
    return [e["step_time"] for e in trainer.state.log_history if "step_time" in e], wall


def rftcli_run(model_dir: Path, data: Path, out: Path, args) -> tuple[list[float], float]:
    from rftcli.stages import train_grpo

    start = time.perf_counter()
    train_grpo.run(train_grpo.Config(dataset=data, model=str(model_dir), out=out,
                                     rewards=("accuracy=1", "format=0.2"), **settings(args)))
    wall = time.perf_counter() - start
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [e["step_time"] for e in logged if "step_time" in e], wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("-n", "--num-generations", type=int, default=4)
    ap.add_argument("--max-completion-length", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    from rftcli import tiny_model
    from rftcli.stages import prepare_data

    root = Path(tempfile.mkdtemp(prefix="grpo-bench-"))
    model_dir = tiny_model.build("builtin:tiny-qwen2.5-vl", root / "model")
    data = root / "data.parquet"
    prepare_data.run(prepare_data.Config(out=data, task="counting", num=2 * args.prompts, test_fraction=0.25))

    results: dict[str, list[tuple[float, float]]] = {"bare": [], "rftcli": []}
    # One warm-up of each (imports, allocator), then alternating measured runs.
    for i in range(args.repeats + 1):
        for name, fn in (("bare", bare_run), ("rftcli", rftcli_run)):
            steps, wall = fn(model_dir, data, root / f"{name}-{i}", args)
            if len(steps) != args.steps:
                raise SystemExit(f"{name}: logged {len(steps)} steps, expected {args.steps}")
            median = statistics.median(steps[WARMUP_STEPS:])
            if i:
                results[name].append((median, wall))
            print(f"{'warm-up' if i == 0 else f'run {i}'} {name:6s}: median step {median * 1000:7.1f} ms, "
                  f"run {wall:6.2f} s", flush=True)

    step = {k: statistics.median(m for m, _ in v) for k, v in results.items()}
    wall = {k: statistics.median(w for _, w in v) for k, v in results.items()}
    print(f"\ncommand: OMP_NUM_THREADS=1 python bench/grpo_overhead.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"tiny model, G={args.num_generations}, {args.max_completion_length} completion tokens, batch "
          f"{args.batch_size}, {args.steps} steps, {args.repeats} repeats")
    print(f"median step time: bare {step['bare'] * 1000:.1f} ms, rftcli {step['rftcli'] * 1000:.1f} ms")
    print(f"step ratio (rftcli / bare): {step['rftcli'] / step['bare']:.3f}   (target <= 1.05)")
    print(f"run ratio  (rftcli / bare): {wall['rftcli'] / wall['bare']:.3f}   "
          f"({wall['bare']:.1f} s vs {wall['rftcli']:.1f} s, loading and saving included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
