"""Throughput of the `format` and `accuracy` rewards on rollouts-like completions, and adversarial LaTeX.

    OMP_NUM_THREADS=1 python bench/score_throughput.py            # 100k rows, as quoted in CHANGELOG/issue 4
    python bench/score_throughput.py --rows 20000 --no-end-to-end # quicker
    python bench/score_throughput.py --repeats 5                  # median and min-max of the direct calls

Prints rows/s and the ratio to the targets of issue 4 (format >= 50k rows/s, accuracy >= 2k rows/s):
  - format and accuracy called directly on the whole list, in this process (one core); with `--repeats N`
    each N times, reported as the median and min-max, beside `accuracy_lenient` (the old default's
    extraction) measured in the same repeats as the baseline;
  - accuracy through score's worker pool (`--workers`, default 2) with the row isolation on;
  - the `score` stage end to end on a Parquet file (read, score, diagnostics, write), 1 and N workers;
  - accuracy on LaTeX rows alone, every row distinct (no cache hits): formulas the quick numeric check
    decides, and inequalities, which only math_verify can (its cost per comparison).
Then scores adversarial LaTeX (deep nesting, towers of exponents, factorials of huge numbers) on either
side of the comparison, one row at a time, and fails (exit 1) if any row takes longer than its limit
(`MATH_TIMEOUT_S` plus 0.5 s of slack).

The rows are synthetic and seeded: groups of 8 completions per prompt, answer types mixed as in a VQA
training set (number 50%, choice 15%, text 10%, math 20%, box 5%), completions of 20-150 words of
reasoning in <think> then an <answer> (10% untagged, 5% \\boxed{}), final answers drawn per group
from a few variants (as a policy's samples repeat) and every prompt's LaTeX answer distinct, so
math_verify's cache sees what it would in GRPO: hits within a group, none across prompts. One LaTeX
form in seven (inequalities) is beyond the quick formula check and goes to math_verify.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"format": 50_000.0, "accuracy": 2_000.0}
GROUP = 8
WORDS = "we count the objects in the image then check each one again so the total is".split()


def _variants(rng: random.Random, kind: str, i: int) -> tuple[str, list[str], list[str] | None]:
    """(gold, final answers a policy might give, choices) for prompt i."""
    if kind == "number":
        n = rng.randint(0, 20)
        return str(n), [str(n), f"{n} objects", f"x = {n}", str(n + 1), str(max(n - 1, 0))], None
    if kind == "choice":
        options = [f"option {k} {i}" for k in range(4)]
        gold = rng.choice("ABCD")
        wrong = rng.choice([c for c in "ABCD" if c != gold])
        return gold, [gold, f"({gold})", f"{gold}. {options['ABCD'.index(gold)]}", wrong, f"the answer is {wrong}"], options
    if kind == "text":
        word = rng.choice(["red", "blue", "green", "circle", "square", "left", "right"])
        return word, [word, word.title() + ".", "purple", "the answer is " + word], None
    if kind == "math":  # every prompt its own answer, as in a real dataset: only a group shares the cache
        a, b = rng.randint(1, 9), 13 + i
        forms = [
            (f"\\frac{{{a}}}{{{b}}}", [f"\\frac{{{a}}}{{{b}}}", f"\\frac{{{2 * a}}}{{{2 * b}}}", f"{a}/{b}",
                                       f"\\frac{{{a + 1}}}{{{b}}}"]),
            (f"{a}\\sqrt{{{b}}}", [f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}", f"{a + 1}\\sqrt{{{b}}}"]),
            (f"{a}x+{b}", [f"{a}x+{b}", f"{b}+{a}x", f"{a}x-{b}"]),
            (f"\\pi/{b}", [f"\\frac{{\\pi}}{{{b}}}", f"\\pi/{b}", f"\\pi/{b + 1}"]),
            (f"({a}, {b}]", [f"({a},{b}]", f"({a}, {b})", f"[{a}, {b}]"]),
            (f"\\sin(\\frac{{\\pi}}{{{b}}})", [f"\\sin(\\pi/{b})", f"\\cos(\\frac{{\\pi}}{{{b}}})",
                                                 f"\\sin(\\frac{{\\pi}}{{{b + 1}}})"]),
            (f"y = {a}x + {b}", [f"y={a}x+{b}", f"y = {b} + {a}x", f"y = {a}x - {b}"]),
            # beyond the quick formula check: only math_verify decides inequalities
            (f"x \\geq {b}", [f"x \\geq {b}", f"{b} \\leq x", f"x > {b}", f"x \\leq {b}"]),
        ]
        gold, answers = forms[i % len(forms)]
        return gold, answers, None
    x1, y1 = rng.randint(0, 200), rng.randint(0, 200)
    w, h = rng.randint(20, 100), rng.randint(20, 100)
    return (f"[{x1}, {y1}, {x1 + w}, {y1 + h}]",
            [f"[{x1}, {y1}, {x1 + w}, {y1 + h}]", f"[{x1 + 5}, {y1 + 3}, {x1 + w + 4}, {y1 + h}]",
             f'[{{"bbox_2d": [{x1}, {y1}, {x1 + w}, {y1 + h}]}}]', f"[{x1 + w}, {y1 + h}, {x1 + 2 * w}, {y1 + 2 * h}]"],
            None)


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    kinds = ["number"] * 10 + ["choice"] * 3 + ["text"] * 2 + ["math"] * 4 + ["box"]
    rows = []
    for i in range((n + GROUP - 1) // GROUP):
        kind = rng.choice(kinds)
        gold, answers, choices = _variants(rng, kind, i)
        pool = rng.sample(answers, k=min(3, len(answers)))  # a group's samples settle on a few answers
        for j in range(GROUP):
            think = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 150)))
            final = rng.choice(pool)
            style = rng.random()
            if style < 0.10:
                text = f"<think>{think}</think> So it is {final}."
            elif style < 0.15:
                text = f"<think>{think}</think> The result is \\boxed{{{final}}}."
            else:
                text = f"<think>{think}</think>\n<answer>{final}</answer>"
            rows.append({"completion": text, "answer": gold, "answer_type": kind, "choices": choices,
                         "group_index": i, "sample_index": j, "num_tokens": len(text) // 4})
    return rows[:n]


def rate(fn, n: int) -> tuple[float, float]:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return n / seconds, seconds


def rate_cpu(fn, n: int) -> tuple[float, float, float]:
    """(rows per wall second, wall seconds, rows per CPU second of this process): on a shared machine
    the CPU figure is what the code costs, the wall figure what this run got."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    return n / seconds, seconds, n / max(cpu_seconds, 1e-9)


def _clear_caches() -> None:
    from rftcli.rewards.mathcheck import _math_equal_cached, _parse

    _math_equal_cached.cache_clear()
    _parse.cache_clear()


def report(name: str, rows_per_s: float, seconds: float, target: float | None, per_cpu_s: float | None = None) -> None:
    ratio = f"  {rows_per_s / target:5.2f}x target {target:,.0f}" if target else ""
    cpu = f"  [{per_cpu_s:,.0f} rows/CPU-s{f', {per_cpu_s / target:.2f}x' if target else ''}]" if per_cpu_s else ""
    print(f"{name:<58} {rows_per_s:>9,.0f} rows/s ({seconds:6.2f} s){ratio}{cpu}", flush=True)


def bench_repeated(rows: list[dict], repeats: int) -> None:
    """format, accuracy and accuracy_lenient, interleaved `repeats` times: median rows/s (min-max) and the
    ratio of accuracy to accuracy_lenient within each repeat."""
    from statistics import median

    from rftcli.rewards.accuracy import accuracy, accuracy_lenient
    from rftcli.rewards.format import format_strict

    completions = [r["completion"] for r in rows]
    cols = {k: [r[k] for r in rows] for k in ("answer", "answer_type", "choices")}
    n = len(rows)
    runs = {"format": [], "accuracy": [], "accuracy_lenient": []}
    for _ in range(repeats):
        runs["format"].append(rate(lambda: format_strict(completions), n)[0])
        for name, fn in (("accuracy", accuracy), ("accuracy_lenient", accuracy_lenient)):
            _clear_caches()
            runs[name].append(rate(lambda f=fn: f(completions, **cols), n)[0])
    for name, values in runs.items():
        target = TARGETS.get(name)
        ratio = f"  {median(values) / target:5.2f}x target {target:,.0f}" if target else ""
        print(f"{name + f', direct, {n:,} rows, {repeats} repeats':<58} median {median(values):>9,.0f} rows/s "
              f"(min {min(values):,.0f}, max {max(values):,.0f}){ratio}", flush=True)
    ratios = [a / b for a, b in zip(runs["accuracy"], runs["accuracy_lenient"], strict=True)]
    print(f"  accuracy / accuracy_lenient within each repeat: median {median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})", flush=True)


def bench_direct(rows: list[dict]) -> None:
    from rftcli.rewards.accuracy import accuracy
    from rftcli.rewards.format import format_strict

    completions = [r["completion"] for r in rows]
    cols = {k: [r[k] for r in rows] for k in ("answer", "answer_type", "choices")}
    n = len(rows)
    wall, seconds, cpu = rate_cpu(lambda: format_strict(completions), n)
    report(f"format_strict, direct, {n:,} rows, 1 process", wall, seconds, TARGETS["format"], cpu)
    _clear_caches()
    wall, seconds, cpu = rate_cpu(lambda: accuracy(completions, **cols), n)
    report(f"accuracy, direct, {n:,} rows, 1 process", wall, seconds, TARGETS["accuracy"], cpu)
    math_rows = [r for r in rows if r["answer_type"] == "math"]
    share = sum(1 for r in math_rows if r["completion"].count("\\") or "x" in r["answer"]) / max(n, 1)
    print(f"  (rows of type math: {len(math_rows) / n:.0%}; rows with LaTeX or a formula: {share:.0%})")


def bench_pool(rows: list[dict], workers: int) -> None:
    from rftcli.rewards.combine import Isolation, load_rewards
    from rftcli.rewards.pool import Chunk, WorkerPool

    specs = ["accuracy"]
    keys = ("completion", "answer", "answer_type", "choices")
    chunks = [Chunk(o, [r["completion"] for r in rows[o:o + 256]], {k: [r[k] for r in rows[o:o + 256]] for k in keys})
              for o in range(0, len(rows), 256)]
    start = time.perf_counter()
    with WorkerPool(load_rewards(specs), specs, workers, Isolation()) as pool:
        started = time.perf_counter()
        report(f"accuracy, score worker pool, {len(rows):,} rows, {workers} workers",
               *rate(lambda: sum(len(r.total) for r in pool.imap(chunks)), len(rows)), TARGETS["accuracy"])
    print(f"  (starting {workers} workers took {started - start:.2f} s, not counted)")


def bench_math_uncached(n: int) -> None:
    from rftcli.rewards.accuracy import accuracy

    rng = random.Random(1)
    cases = {"formulas (quick check)": [], "inequalities (math_verify)": []}
    for i in range(n):
        a, b = rng.randint(1, 50), rng.randint(51, 99)
        cases["formulas (quick check)"].append((f"\\frac{{{2 * a}}}{{{2 * b}}} + {i}x", f"\\frac{{{a}}}{{{b}}} + {i}x"))
        cases["inequalities (math_verify)"].append((f"{b + i} \\leq {a}x", f"{a}x \\geq {b + i}"))
    for label, pairs in cases.items():
        completions = [f"<answer>{p}</answer>" for p, _ in pairs]
        golds = [g for _, g in pairs]
        _clear_caches()
        wall, seconds, cpu = rate_cpu(lambda c=completions, g=golds: accuracy(c, answer=g, answer_type=["math"] * n), n)
        report(f"accuracy, LaTeX {label}, all distinct, {n:,} rows", wall, seconds, None, cpu)


def bench_end_to_end(rows: list[dict], workers: int, tmp: Path) -> None:
    from rftcli.schema import write_table
    from rftcli.stages import score

    full = []
    for r in rows:
        full.append({"id": f"p{r['group_index']}", "split": "train", "task": "bench", "system": None,
                     "prompt": "Question?", "images": [], "answer": r["answer"], "answer_type": r["answer_type"],
                     "choices": r["choices"], "reasoning": None, "response": None, "metadata": None,
                     "group_index": r["group_index"], "sample_index": r["sample_index"],
                     "completion": r["completion"], "completion_ids": [1] * 8, "logprobs": [-1.0] * 8,
                     "num_tokens": r["num_tokens"], "finish_reason": "stop", "policy": "bench", "policy_hash": "bench",
                     "backend": "hf", "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 512, "seed": 0})
    src = write_table(tmp / "rollouts.parquet", "rollouts", full, {"stage": "bench"})
    for w in (1, workers):
        _clear_caches()
        result = score.run(score.Config(rollouts=src, out=tmp / f"scores-{w}.parquet", workers=w, overwrite=True,
                                         rewards=("accuracy=1", "format=0.2")))
        report(f"score stage end to end (accuracy+format), {workers if w > 1 else 1} worker(s)",
               result.rows / result.seconds, result.seconds, TARGETS["accuracy"])


ADVERSARIAL = [
    "\\frac{" * 500 + "1" + "}" * 500,
    "\\frac{" * 500,
    "(" * 29 + "1" + ")" * 29,
    "10^{10^{10^{10}}}",
    "9^{9^{9^{9}}}",
    "2^{3^{4^{5}}}",
    "7^{1234567890}",
    "99999999999^{99999999999}",
    "(10^{9})!",
    "\\binom{10^{9}}{10^{8}}",
    "\\prod_{n=1}^{10^{7}} n",
    "\\sum_{n=1}^{10^{9}} n^{n}",
    "e^{e^{e^{e^{10}}}}",
    "\\sqrt[10^{9}]{2}",
    "x" * 5000,
    "1" * 999,
    "\\left(" * 20 + "x" + "\\right)" * 20,
]


def bench_adversarial() -> bool:
    from rftcli.rewards.accuracy import accuracy
    from rftcli.rewards.combine import Isolation, WeightedReward, apply_reward
    from rftcli.rewards.mathcheck import MATH_TIMEOUT_S

    limit = MATH_TIMEOUT_S + 0.5
    reward = WeightedReward("accuracy", 1.0, accuracy)
    worst, ok = 0.0, True
    for expr in ADVERSARIAL:
        for pred, gold in ((expr, "1"), ("1", expr)):
            _clear_caches()
            start = time.perf_counter()
            value = apply_reward(reward, [f"<answer>{pred}</answer>"], {"answer": [gold], "answer_type": ["math"]}, {},
                                 isolation=Isolation())
            seconds = time.perf_counter() - start
            worst = max(worst, seconds)
            if seconds > limit or value[0] not in (0.0, 1.0):  # "((1))" is 1: the verdict may be either
                ok = False
                print(f"  FAIL {seconds:.2f} s, value {value}: {pred[:40]!r} vs {gold[:40]!r}")
    print(f"adversarial LaTeX: {2 * len(ADVERSARIAL)} rows, slowest {worst:.2f} s, limit {limit:.1f} s per row: "
          f"{'all within' if ok else 'SOME OVER'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--math-rows", type=int, default=500)
    parser.add_argument("--no-end-to-end", action="store_true", help="Skip the score stage on a Parquet file.")
    parser.add_argument("--repeats", type=int, default=1,
                        help="Repeat the direct calls N times and report the median and min-max (N > 1).")
    args = parser.parse_args()
    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"Python {platform.python_version()}")
    rows = synthetic_rows(args.rows)
    if args.repeats > 1:
        bench_repeated(rows, args.repeats)
    else:
        bench_direct(rows)
    bench_pool(rows, args.workers)
    bench_math_uncached(args.math_rows)
    if not args.no_end_to_end:
        with tempfile.TemporaryDirectory() as tmp:
            bench_end_to_end(rows, args.workers, Path(tmp))
    return 0 if bench_adversarial() else 1


if __name__ == "__main__":
    sys.exit(main())
