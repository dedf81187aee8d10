"""Peak memory and speed of `prepare-data` at two sizes: does memory stay flat as the data grows?

Each run is a fresh `python -m rftcli prepare-data` subprocess; its peak resident set size comes from
the kernel when it exits (`os.wait4` rusage, ru_maxrss), so nothing of this script's own memory counts.
Two inputs per size:

    task   --task counting --num N: rows and 56x56 images generated in-process
    input  a JSONL of N rows written here first, each with its image inline as base64 (112x112
           counting images), converted with --max-pixels 3136 so that every image is decoded, resized
           to 56x56 and re-encoded: the whole input path (read, decode, dedupe hash, normalise,
           write). Rows repeating an earlier row's image and answer are dropped ("written" < "in").

Usage:  python bench/prepare_data_memory.py [--sizes 10000 100000] [--modes task input] [--workdir DIR]
Target (issue 3): peak RSS under 1 GB at 100k rows and about the same at 10k and 100k.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq


def write_input(path: Path, n: int) -> None:
    """N rows in the plain layout, images inline, from the counting generator (seed 1)."""
    from rftcli.tasks.counting import generate

    with open(path, "w") as fh:
        # 112 px images with up to 10 squares on 64 cells: repeats are rare, so nearly every row is written
        for row in generate(n, seed=1, image_size=112, max_count=6, distractors=4):
            image = base64.b64encode(row["images"][0]["bytes"]).decode()
            fh.write(json.dumps({"id": row["id"], "question": "How many red squares are in the image?",
                                 "image": image, "answer": row["answer"]}) + "\n")


def measure(args: list[str]) -> dict:
    """Run `python -m rftcli ARGS`; wall seconds and the child's peak RSS in MB."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rftcli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"prepare-data failed ({proc.returncode}): {err.strip()}")
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "seconds": seconds}  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--modes", nargs="+", default=["task", "input"], choices=["task", "input"])
    parser.add_argument("--workdir", type=Path, default=None, help="Where files go (default: a temporary folder).")
    opts = parser.parse_args()
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="rftcli-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"command: python {' '.join(shlex.quote(a) for a in sys.argv)}")
    results = []
    for mode in opts.modes:
        for n in opts.sizes:
            out = workdir / f"{mode}-{n}.parquet"
            if mode == "task":
                args = ["prepare-data", "--task", "counting", "--num", str(n), "--out", str(out), "--overwrite"]
            else:
                src = workdir / f"rows-{n}.jsonl"
                if not src.exists():
                    write_input(src, n)
                args = ["prepare-data", "--input", str(src), "--max-pixels", "3136", "--out", str(out), "--overwrite"]
            m = measure(args)
            written = pq.ParquetFile(out).metadata.num_rows
            m.update(mode=mode, rows=n, written=written, rows_per_s=n / m["seconds"], out_mb=out.stat().st_size / 2**20)
            results.append(m)
            print(f"  {mode:5s} {n:>7,} rows in, {written:>7,} written  peak RSS {m['peak_rss_mb']:7.1f} MB  "
                  f"{m['seconds']:7.1f} s  {m['rows_per_s']:8,.0f} rows/s  output {m['out_mb']:.1f} MB   "
                  f"[rftcli {' '.join(args)}]")
    print()
    for mode in opts.modes:
        runs = [r for r in results if r["mode"] == mode]
        if len(runs) > 1:
            small, large = runs[0], runs[-1]
            print(f"{mode}: peak RSS {large['rows']:,} / {small['rows']:,} rows = "
                  f"{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x "
                  f"({'under' if large['peak_rss_mb'] < 1024 else 'OVER'} the 1 GB target)")
    (workdir / "results.json").write_text(json.dumps(results, indent=1))
    print(f"results: {workdir / 'results.json'}")


if __name__ == "__main__":
    main()
