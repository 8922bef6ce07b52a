#!/bin/bash
# Builds, here, the release binaries that scripts/gpu_check.sh runs on a GPU machine, so that the GPU machine
# compiles nothing but kernels. No CUDA toolkit is needed: burn-cuda loads the driver and NVRTC at run time,
# and CUDARC_CUDA_VERSION names the CUDA of the machine that will run them (13000 for 13.0, the default).
#
#     scripts/gpu_build.sh            # .gpu/cuda/ and .gpu/cuda.tar.xz: --features cuda
#     scripts/gpu_build.sh cpu        # .gpu/cpu/ and .gpu/cpu.tar.xz: the same binaries without CUDA (rehearsal)
#     scripts/gpu_build.sh cpu --no-build   # package what the last build left in the target folder
#
# What: lm-cli (device-check, startup, bench), the runner `interplay`, and the plugins of
# pipelines/cuda-smoke.toml (datagen, pretrain, rl-grpo, eval, reward-process), stripped, then packed with xz:
# the device call carries only the archive (`carry: [".gpu/cuda.tar.xz"]`, 64 MiB for the archive and the
# working tree together), and gpu_check.sh unpacks it there. Prints every file's size and the archive's.
# Uses $CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
KIND=${1:-cuda}
case "$KIND" in cuda | cpu) ;; *) echo "usage: scripts/gpu_build.sh [cuda|cpu] [--no-build]" >&2; exit 2 ;; esac
BUILD=yes
[ "${2:-}" = --no-build ] && BUILD=no
TARGET=${CARGO_TARGET_DIR:-target}
PLUGINS=(datagen pretrain rl-grpo eval reward-process)
args=(build --release --locked -p interplay -p lm)
for p in "${PLUGINS[@]}"; do args+=(-p "$p"); done
if [ "$KIND" = cuda ]; then
  export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
  # Every plugin of the pipeline that runs a model has a `cuda` feature (xtask's `--cuda` picks the same).
  args+=(--features lm/cuda,pretrain/cuda,rl-grpo/cuda,eval/cuda)
fi
if [ "$BUILD" = yes ]; then
  echo "+ cargo ${args[*]}"
  start=$(date +%s)
  cargo "${args[@]}"
  echo "built in $(($(date +%s) - start)) s"
fi

dir=.gpu/$KIND
rm -rf "$dir" && mkdir -p "$dir"
cp "$TARGET/release/interplay" "$TARGET/release/lm-cli" "$dir/"
for p in "${PLUGINS[@]}"; do cp "$TARGET/release/lib${p//-/_}.so" "$dir/"; done
# The plugins keep their dynamic symbols (the runner finds them with dlsym) and their unwind tables.
strip "$dir"/*
echo "$KIND" > "$dir/KIND"
git describe --always --dirty > "$dir/COMMIT" 2>/dev/null || true
ls -l "$dir" | awk 'NR > 1 { printf "%12d  %s\n", $5, $9 }'
echo "$(du -cb "$dir"/* | tail -1 | cut -f1) bytes stripped"
tar -C .gpu -cf - "$KIND" | xz -T2 -6 > ".gpu/$KIND.tar.xz"
echo "$(stat -c %s ".gpu/$KIND.tar.xz") bytes in .gpu/$KIND.tar.xz (carried to the device machine)"
