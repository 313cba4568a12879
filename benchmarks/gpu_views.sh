#!/usr/bin/env bash
# Every GPU row of the views (benchmarks.md, "Views on one GPU") in one run of under 10 minutes on one
# H100/H200 with 16 cores, with the set-up's .venv:
#   - step only and both paths end to end (per_image, batched) for clsa_single and mocov2 at batch 256;
#   - clsa_single at 32 per GPU (the README's 8-GPU command: global 256), with a profiler trace of 3
#     batched iterations split into IPC, decode, views and step ($OUT/single_32_trace.json);
#   - clsa_multi with --checkpoint-strong (bf16 Multi at 256 fits without it only on ~140 GB cards);
#   - clsa_single with --compile;
#   - 1 and 2 processes through pretrain/main.py (DDP, shuffle-BN, and a SyncBN smoke run); on a
#     machine with one GPU these rows say they need two;
#   - the per-core CPU figures of the same machine (benchmarks/pretrain_data_speed.py).
# Targets (README, "Throughput"): Single >= 2500 and Multi >= 700 img/s end to end, each >= 90% of step only.
# Each row's output goes to $OUT/<row>.txt (default benchmarks-gpu-out/). SMOKE=1 runs the rows at toy
# sizes on any machine, to check the script itself; it skips --compile, whose CPU compilation alone
# takes minutes.
#
#     bash benchmarks/gpu_views.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks-gpu-out}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"

if [ "${SMOKE:-0}" = 1 ]; then
    size=(--arch resnet18 --batch-size 4 --queue-size 16 --steps 1 --warmup 1 --workers 1 --no-augment-only)
    per_gpu_32=("${size[@]}")
    processes=(--arch resnet18 --batch-size 8 --size 64 --steps 2 --workers 1)
    per_core=(--images 2 --rounds 1)
    limit=300
else
    size=(--steps 20 --warmup 5)
    per_gpu_32=(--batch-size 32 --steps 40 --warmup 10)
    processes=(--steps 20)
    per_core=(--images 100 --rounds 3)
    limit=150
fi

status=0
row() {
    local name=$1
    shift
    echo "== $name: $*"
    timeout "$limit" "$PYTHON" "$@" 2>&1 | tee "$OUT/$name.txt" || { status=1; echo "== $name failed"; }
}

row single benchmarks/pretrain_speed.py --presets clsa_single mocov2 "${size[@]}"
row single_32 benchmarks/pretrain_speed.py --presets clsa_single --trace "$OUT/single_32_trace.json" "${per_gpu_32[@]}"
row multi_checkpoint benchmarks/pretrain_speed.py --presets clsa_multi --checkpoint-strong "${size[@]}"
[ "${SMOKE:-0}" = 1 ] || row single_compile benchmarks/pretrain_speed.py --presets clsa_single --compile "${size[@]}"
row two_process benchmarks/pretrain_processes.py --processes 2 "${processes[@]}"
row two_process_syncbn benchmarks/pretrain_processes.py --processes 2 --sync-bn "${processes[@]}"
row per_core benchmarks/pretrain_data_speed.py "${per_core[@]}"
exit $status
