#!/usr/bin/env bash
# Every GPU row of the views (benchmarks.md, "Views on one GPU") in one run of at most 8 minutes on one
# H100/H200 with 16 cores: each row has its own time limit and the limits add up to 445 s. Each row of
# benchmarks/pretrain_speed.py measures its step only (bf16) in the same run, the reference of its
# end-to-end rows ("vs step"):
#   - single: step only and both paths end to end (per_image, batched) for clsa_single and mocov2 at 256;
#   - single_32: clsa_single at 32 per GPU (the README's 8-GPU command: global 256), with a profiler
#     trace of 3 batched iterations split into IPC, decode, views and step (single_32_trace.json.gz);
#   - multi: clsa_multi at 256 in bf16 without checkpointing (it fits a ~140 GB card);
#   - multi_checkpoint: the same with --checkpoint-strong (what fits 80 GB);
#   - single_compile: clsa_single with --compile (static shapes, as training);
#   - processes: 1 and 2 processes through pretrain/main.py with shuffle-BN, then with SyncBN (a
#     machine with one GPU says they need two);
#   - per_core: the per-core CPU figures of the same machine (benchmarks/pretrain_data_speed.py).
# What the rows are read against: Single 2500 and Multi 700 img/s end to end, 90% of step only (benchmarks.md).
# The rows write at most 8 files to $OUT (default benchmarks-gpu-out/): <row>.txt and the trace.
# Python: $PYTHON, else .venv/bin/python if the set-up made one, else python3. SMOKE=1 runs the rows
# at toy sizes on any machine, to check the script itself: each script and path once, so it skips
# --compile (minutes of CPU compilation), the second preset of the single row, multi_checkpoint and
# the SyncBN processes row (the same code with one flag more).
#
#     bash benchmarks/gpu_views.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks-gpu-out}
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$OUT"

full() { [ "${SMOKE:-0}" != 1 ]; }  # the rows a smoke run leaves out
if ! full; then
    size=(--arch resnet18 --batch-size 4 --queue-size 16 --steps 1 --warmup 1 --workers 1 --no-augment-only)
    per_gpu_32=("${size[@]}")
    processes=(--arch resnet18 --batch-size 8 --size 64 --steps 2 --workers 1)
    per_core=(--images 2 --rounds 1)
else
    size=(--steps 12 --warmup 3)
    per_gpu_32=(--batch-size 32 --steps 30 --warmup 5)
    processes=(--steps 10)
    per_core=(--images 40 --rounds 2)
fi

status=0
# row FILE LIMIT_S ARGS...: one command, its output to $OUT/FILE.txt (appended to, for a second row of a
# file). At toy sizes the limit is 300 s: the rows then check the script, not the time.
row() {
    local name=$1 limit=$2
    [ "${SMOKE:-0}" = 1 ] && limit=300
    shift 2
    echo "== $name: $*" | tee -a "$OUT/$name.txt"
    timeout "$limit" "$PYTHON" "$@" 2>&1 | tee -a "$OUT/$name.txt" || { status=1; echo "== $name failed"; }
}

rm -f "$OUT"/{single,single_32,multi,multi_checkpoint,single_compile,processes,per_core}.txt "$OUT/single_32_trace.json.gz"
speed=benchmarks/pretrain_speed.py
row single 100 $speed --presets clsa_single $(full && echo mocov2) "${size[@]}"
row single_32 50 $speed --presets clsa_single --paths step_bf16 batched \
    --trace "$OUT/single_32_trace.json.gz" "${per_gpu_32[@]}"
row multi 75 $speed --presets clsa_multi --paths step_bf16 per_image batched "${size[@]}"
full && row multi_checkpoint 45 $speed --presets clsa_multi --checkpoint-strong --paths step_bf16 batched "${size[@]}"
full && row single_compile 105 $speed --presets clsa_single --compile --paths step_bf16 batched "${size[@]}"
row processes 20 benchmarks/pretrain_processes.py --processes 2 "${processes[@]}"
full && row processes 20 benchmarks/pretrain_processes.py --processes 2 --sync-bn "${processes[@]}"
row per_core 30 benchmarks/pretrain_data_speed.py "${per_core[@]}"
exit $status
