#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU and PyTorch 2.11 but no Rust toolchain: it builds
# nothing. Build here first (`cargo build --release`), carry target/release/multigrid, and run
#   scripts/gpu-check.sh [OUT_DIR]
# It reports whether CUDA is detected, a forward and backward on the GPU, and the SlowFast R50
# 8x8 training-step time at T=32, S=224, batch 8, with and without bf16 autocast, against the
# same model trained by PyTorch on the same libtorch; then the trainer end to end on CUDA (tiny
# multigrid run: warm-up over the planned shapes, bf16 autocast, and fp16 with the loss scaler).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check-out}
mkdir -p "$out"
python=${PYTHON:-python3}
torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin=target/release/multigrid
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
  ldd "$bin" | grep -E "torch_cuda|c10_cuda" || echo "libtorch_cuda is not linked"
  "$bin" --version
  # A forward and backward of the tiny model on the GPU, and the step-time comparison.
  "$bin" bench step --device cuda --depth 18 --width 8 --shapes 16x16x64 --steps 3 --python "$python"
  "$bin" bench step --device cuda --depth 50 --width 64 --shapes 8x32x224 --steps 10 --python "$python"
  "$bin" bench step --device cuda --depth 50 --width 64 --shapes 8x32x224 --steps 10 --autocast --python "$python"
  "$bin" gen-data --out "$out/data" --clips 600 --store --no-videos
  for precision in bf16 fp16; do
    "$bin" train --config configs/synthetic_slowfast_tiny_multigrid.json --device cuda \
      --data "$out/data" --output-dir "$out/train-$precision" --set run.precision=$precision
    head -1 "$out/train-$precision/metrics.jsonl"
  done
} 2>&1 | tee "$out/gpu-check.log"
