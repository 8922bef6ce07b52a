#!/bin/bash
# The whole CUDA check in one device call of at most 8 minutes (crates/lm/README.md, "Status on CUDA"):
#   1. start-up: `lm-cli startup` (process start -> first generated token -> first training step, bench-3m)
#      twice: with empty kernel caches (cold), then with the caches the first run wrote (warm). cubecl's caches
#      are turned on by cubecl.toml (repository root); the driver's PTX cache is CUDA_CACHE_PATH.
#   2. `lm-cli device-check`: CPU against CUDA (logits, first-step gradients, three steps' losses, greedy).
#   3. benchmarks, ours and the PyTorch peer (scripts/peer_bench.py) on the same GPU: bench-3m (16 x 256) and
#      paper-100m (16 x 1024): train and sampling tokens/s, peak device memory, ratios.
#   4. pipelines/cuda-smoke.toml (data -> pretrain -> RL -> eval on CUDA) to a report.
# Every step has its own time limit, cut further so that the whole run ends by $BUDGET_S (default 470 s).
# Results: $OUT/summary.json (rewritten after every step), $OUT/log.txt, $OUT/details.tar.gz (every step's log
# and JSON, the pipeline's report and stage logs), $OUT/gpu.csv (device memory and utilisation every 0.2 s).
#
# Build here first (nothing is compiled there but kernels): scripts/gpu_build.sh  -> .gpu/cuda.tar.xz
# Device call, from the repository root:  carry [".gpu/cuda.tar.xz"], timeout_s 540,
#     command: bash scripts/gpu_check.sh
# Rehearsal on this CPU machine, the same steps with the CPU build (peer needs torch; paper-100m shrunk):
#     scripts/gpu_build.sh cpu && DEVICE=cpu OUT=/tmp/gpu-check bash scripts/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-gpu-check-out}
BUDGET_S=${BUDGET_S:-470}
T0=$(date +%s)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
exec > >(tee "$OUT/log.txt") 2>&1
echo "gpu_check: device $DEVICE, budget ${BUDGET_S}s, start $(date -u +%FT%TZ), work $WORK"

BIN=.gpu/$DEVICE
if [ ! -x "$BIN/lm-cli" ]; then
  [ -f ".gpu/$DEVICE.tar.xz" ] || { echo "no $BIN/ and no .gpu/$DEVICE.tar.xz: run scripts/gpu_build.sh $DEVICE"; exit 2; }
  tar -xJf ".gpu/$DEVICE.tar.xz" -C .gpu || exit 2
fi
echo "binaries: $(cat "$BIN/COMMIT" 2>/dev/null) ($(cat "$BIN/KIND" 2>/dev/null))"

if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$WORK/gpu.txt"
  NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  export CUDA_PATH=${CUDA_PATH:-$(dirname "$(dirname "$(readlink -f "$NVCC")")")}
  export LD_LIBRARY_PATH=$CUDA_PATH/lib64:$CUDA_PATH/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
  # The driver's PTX -> SASS cache, kept with cubecl's caches in target/ (cubecl.toml: cache = "target").
  export CUDA_CACHE_PATH=$PWD/target/cuda-cache CUDA_CACHE_MAXSIZE=4294967296
  (while :; do
    echo "$(date +%s.%N),$(nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits | head -1)"
    sleep 0.2
  done) > "$OUT/gpu.csv" &
  SAMPLER=$!
  PY=python3
  PEER_DEV=cuda
  BENCH100=(--preset paper-100m --seq 1024)
  PEER100=("${BENCH100[@]}")
  LIMIT100=60
else
  echo "cpu rehearsal: $(nproc) cores" | tee "$WORK/gpu.txt"
  (while :; do echo "$(date +%s.%N),0,0"; sleep 1; done) > "$OUT/gpu.csv" &
  SAMPLER=$!
  PY=${PEER_PYTHON:-python3}
  PEER_DEV=cpu
  # Rehearsal only: the 100M model at 2 x 64, training only (its sampling takes minutes on 2 cores).
  BENCH100=(--preset paper-100m --batch 2 --seq 64 --only train)
  PEER100=(--preset paper-100m --batch 2 --seq 64)
  LIMIT100=90 # AdamW over 103M parameters dominates on 2 cores
fi
# AUTOTUNE=minimal (or balanced, extensive, full) sets cubecl's autotune level for every step; unset: cubecl's
# default (balanced). A run that compares levels says so in its summary ("autotune").
[ -n "${AUTOTUNE:-}" ] && export CUBECL_AUTOTUNE_LEVEL=$AUTOTUNE
echo "cubecl.toml: $(grep -E '^cache' cubecl.toml | tr '\n' ' ')autotune ${CUBECL_AUTOTUNE_LEVEL:-default}"
echo "${CUBECL_AUTOTUNE_LEVEL:-default}" > "$WORK/autotune.txt"

STEPS=$WORK/steps.tsv
: > "$STEPS"
summary() {
  python3 scripts/gpu_summary.py --device "$DEVICE" --work "$WORK" --out "$OUT" --budget "$BUDGET_S" --t0 "$T0" \
    > "$WORK/summary.log" 2>&1 || cat "$WORK/summary.log"
}
finish() {
  kill "$SAMPLER" 2>/dev/null
  summary
  # Logs, JSON and reports; not the pipeline's data, weights and checkpoints.
  tar -czf "$OUT/details.tar.gz" -C "$WORK" --exclude=ckpt --exclude='*.safetensors' --exclude='*.jsonl.partial' \
    --exclude='./run/stages/data/out' --exclude='./run/stages/rl-data/out' . 2>/dev/null
  echo "gpu_check: done in $(($(date +%s) - T0)) s; $OUT/summary.json"
}
trap finish EXIT

# step NAME LIMIT_S COMMAND...: runs COMMAND with its output in $WORK/NAME.log (and here), under the smaller of
# LIMIT_S and what is left of the budget (less 10 s for the summary); records rc, wall time and limit.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET_S - ($(date +%s) - T0) - 10))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "=== $name skipped: budget spent"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" skipped 0 0 0 0 >> "$STEPS"
    return
  fi
  echo "=== $name (limit ${limit}s) $(date +%T): $*"
  local s e rc
  s=$(date +%s.%N)
  timeout -k 5 "$limit" "$@" > >(tee "$WORK/$name.log") 2>&1
  rc=$?
  e=$(date +%s.%N)
  echo "=== $name rc=$rc $(python3 -c "print(f'{$e - $s:.1f}')")s"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$s" "$e" "$limit" "$*" >> "$STEPS"
  summary
}

# 1. Start-up, cold then warm.
# cubecl's caches (cubecl.toml, "target"): target/cuda/<version>/ (PTX), target/autotune/<version>/; the driver's:
# target/cuda-cache. Emptied first, so that the first run is cold.
caches=(target/cuda target/autotune target/cuda-cache)
rm -rf "${caches[@]}"
step startup-cold 100 "$BIN/lm-cli" startup --device "$DEVICE" --json "$WORK/startup-cold.json"
du -sb "${caches[@]}" 2>/dev/null | tee "$WORK/caches.txt"
step startup-warm 50 "$BIN/lm-cli" startup --device "$DEVICE" --json "$WORK/startup-warm.json"
# 2. CPU against the device.
step device-check 45 "$BIN/lm-cli" device-check --device "$DEVICE" --json "$WORK/device-check.json"
# 3. Benchmarks: ours, then the peer, on each shape.
step ours-3m 45 "$BIN/lm-cli" bench --device "$DEVICE" --dp 1 --json "$WORK/ours-3m.json"
step peer-3m 35 "$PY" scripts/peer_bench.py --device "$PEER_DEV" --json "$WORK/peer-3m.json"
step ours-100m "$LIMIT100" "$BIN/lm-cli" bench --device "$DEVICE" --dp 1 "${BENCH100[@]}" --json "$WORK/ours-100m.json"
step peer-100m 35 "$PY" scripts/peer_bench.py --device "$PEER_DEV" "${PEER100[@]}" --json "$WORK/peer-100m.json"
# 4. The shrunk RL pipeline on the device, to a report.
overrides=()
[ "$DEVICE" = cpu ] && overrides=(stages.pretrain.device=cpu stages.rl.device=cpu stages.eval.device=cpu)
step pipeline 120 "$BIN/interplay" run pipelines/cuda-smoke.toml --plugin-dir "$BIN" --run-dir "$WORK/run" \
  "${overrides[@]}"
