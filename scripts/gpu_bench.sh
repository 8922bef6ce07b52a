#!/bin/bash
# The CUDA benchmark, in one call on a GPU machine (crates/lm/README.md, "Status on CUDA"):
# CPU-vs-CUDA check, then ours and the PyTorch peer on bench-3m and on paper-100m, same GPU.
#
# Build here (no CUDA toolkit needed; CUDARC_CUDA_VERSION names the machine's CUDA, e.g. 13000 for 13.0):
#     CUDARC_CUDA_VERSION=13000 cargo build --release -p lm --features cuda --bin lm-cli
#     mkdir -p .gpu && cp target/release/lm-cli .gpu/ && strip .gpu/lm-cli      # ~38 MB
# Run there, from the repository root: OUT=results-dir bash scripts/gpu_bench.sh [LIMIT_S]
# LIMIT_S (default 150) bounds each of our runs: burn-cuda compiles its kernels at first use, and on an H200
# (2026-11-26) no training step had finished within 175 s.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-bench-out}; mkdir -p "$OUT"
LIMIT=${1:-150}
exec > >(tee "$OUT/log.txt") 2>&1
B=.gpu/lm-cli
date +%T; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
export CUDA_PATH=${CUDA_PATH:-$(dirname "$(dirname "$(readlink -f "$NVCC")")")}
export LD_LIBRARY_PATH=$CUDA_PATH/lib64:$CUDA_PATH/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 500 > "$OUT/gpu.csv" &
SMI=$!
run() {
  local t=$1 name=$2; shift 2
  echo "=== $name start $(date +%T)"; timeout "$t" "$@"; echo "=== $name rc=$? end $(date +%T)"
}
run "$LIMIT" check $B device-check --device cuda
run "$LIMIT" ours-3m $B bench --device cuda --dp 1 --json "$OUT/ours-3m.json"
run 90 peer-3m python3 scripts/peer_bench.py --device cuda --json "$OUT/peer-3m.json"
run "$LIMIT" ours-100m $B bench --device cuda --dp 1 --preset paper-100m --seq 1024 --json "$OUT/ours-100m.json"
run 90 peer-100m python3 scripts/peer_bench.py --device cuda --preset paper-100m --seq 1024 --json "$OUT/peer-100m.json"
kill $SMI
