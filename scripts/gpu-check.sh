#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU and PyTorch 2.11 but no Rust toolchain: it builds
# nothing. Build here first (`cargo build --release`), carry target/release/multigrid, and run
#   scripts/gpu-check.sh [OUT_DIR]
# It reports whether CUDA is detected, a forward and backward on the GPU, and the SlowFast R50
# 8x8 training-step time at T=32, S=224, batch 8, with and without bf16 autocast, against the
# same model trained by PyTorch on the same libtorch; then the trainer end to end on CUDA (tiny
# multigrid run: warm-up over the planned shapes, bf16 autocast, and fp16 with the loss scaler),
# and data-parallel through NCCL: torchrun's environment at world size 1 with the nccl backend
# named (so the engine runs), and --nproc-per-node 2 where the machine has 2 GPUs; and the
# step time in both memory formats (run.memory_format) with a tiny channels-last training run.
# PARTS (default "all") picks a subset: "memory_format" runs the memory-format part alone;
# MG_BIN names another (e.g. stripped) binary.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check-out}
mkdir -p "$out"
python=${PYTHON:-python3}
torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin=${MG_BIN:-target/release/multigrid}
parts=${PARTS:-all}
memory_format_part() {
  # Contiguous against channels-last-3d, ours and PyTorch's, fp32 and bf16 autocast; then the
  # trainer end to end in channels-last (grouped BN, evaluation, precise BN).
  "$bin" bench step --device cuda --depth 50 --width 64 --shapes 8x32x224,32x8x112 --steps 10 \
    --memory-format contiguous,channels_last_3d --python "$python"
  "$bin" bench step --device cuda --depth 50 --width 64 --shapes 8x32x224,32x8x112 --steps 10 \
    --memory-format contiguous,channels_last_3d --autocast --python "$python"
  [ -d "$out/data" ] || "$bin" gen-data --out "$out/data" --clips 600 --store --no-videos
  "$bin" train --config configs/synthetic_slowfast_tiny_multigrid.json --device cuda \
    --data "$out/data" --output-dir "$out/train-channels-last" --set run.memory_format=channels_last_3d
  tail -1 "$out/train-channels-last/metrics.jsonl"
}
if [ "$parts" = memory_format ]; then
  memory_format_part 2>&1 | tee "$out/gpu-check.log"
  exit
fi
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
  "$bin" build-info | grep -E "^(cuda|nccl)"
  RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511 \
    "$bin" train --config configs/synthetic_slowfast_tiny_multigrid.json --device cuda \
      --data "$out/data" --output-dir "$out/train-nccl1" --set run.dist_backend=nccl \
      --set solver.max_epoch=4 --set run.dist_timeout_s=120
  gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
  if [ "$gpus" -ge 2 ]; then
    "$bin" train --config configs/synthetic_slowfast_tiny_multigrid.json --device cuda \
      --data "$out/data" --output-dir "$out/train-nccl2" --nproc-per-node 2 \
      --set solver.max_epoch=4 --set run.dist_timeout_s=120
  else
    echo "one GPU: the 2-rank NCCL run is skipped"
  fi
  memory_format_part
} 2>&1 | tee "$out/gpu-check.log"
