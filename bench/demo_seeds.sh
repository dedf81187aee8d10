#!/usr/bin/env bash
# Run the tiny recipe for several seeds and print held-out accuracy (base, sft, grpo) and wall time.
#   bash bench/demo_seeds.sh 0 1 2
# Needs `rftcli` on PATH (make install; . .venv/bin/activate). Outputs go to recipes/tiny/out/seed<N>.
set -euo pipefail
cd "$(dirname "$0")/../recipes/tiny"
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
for seed in "${seeds[@]}"; do
  start=$(date +%s)
  make --no-print-directory SEED="$seed" OUT="out/seed$seed" >"out-seed$seed.log" 2>&1 || { tail -20 "out-seed$seed.log"; exit 1; }
  end=$(date +%s)
  python - "$seed" "$((end - start))" <<'PY'
import json, sys
seed, seconds = sys.argv[1], sys.argv[2]
s = json.load(open(f"out/seed{seed}/eval/summary.json"))["models"]
print(f"seed {seed}: " + "  ".join(f"{k} {v['accuracy']:.3f}" for k, v in s.items()) + f"  ({seconds} s)")
PY
done
