#!/usr/bin/env bash
# The GPU check, runnable as written on the GPU machine this project borrows (one H200 with
# PyTorch 2.11 and NVIDIA's libraries; no Rust, FFmpeg, Open MPI or network; minutes at a time,
# ../shared/guides/gpu.md).
#   here:  scripts/gpu-bundle.sh                 builds target/gpu-bundle/multigrid (torch only)
#   there: scripts/gpu-check.sh [OUT_DIR]        with target/gpu-bundle carried along
# One line per check, "PASS name (s)" or "FAIL name (s): the output's last lines", each
# followed by its figures; every part has its own time limit and they run in priority order,
# so a run stopped at its limit keeps what matters most. About 5 minutes on an H200.
# DEVICE=cpu rehearses every part here on the CPU at tiny sizes. MG_BIN names another binary;
# PYTHON another interpreter (default python3, else .venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check-out}
mkdir -p "$out"
python=${PYTHON:-$(command -v python3 >/dev/null && python3 -c 'import torch' 2>/dev/null && echo python3 || echo .venv/bin/python)}
torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin=${MG_BIN:-target/gpu-bundle/multigrid}
device=${DEVICE:-cuda}
passed=0
failed=0

# check NAME SECONDS COMMAND...: runs it under a time limit, prints PASS or FAIL and its figures.
check() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  # The helpers below are shell functions: the timed child shell gets them too.
  timeout "$limit" bash -c "$(declare -f says_pass trained); \"\$@\"" _ "$@" >"$out/$name.out" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "PASS $name ($((SECONDS - start)) s)"
    passed=$((passed + 1))
  else
    echo "FAIL $name ($((SECONDS - start)) s, exit $rc): $(tail -n 3 "$out/$name.out" | tr '\n' ' ')"
    failed=$((failed + 1))
  fi
  grep -vE '^(multigrid: training|  *[0-9]+/[0-9]+)' "$out/$name.out" | tail -n 14 | sed 's/^/    /'
}

# A check whose command must also print PASS (the equality checks print PASS or FAIL).
says_pass() {
  "$@" | tee /dev/stderr | grep -q '^PASS'
}

# The last training line's loss must be finite, and the summary present.
trained() {
  local dir=$1
  shift
  "$@" --output-dir "$dir" && grep -q '"type":"summary"' "$dir/metrics.jsonl" &&
    tail -n 1 "$dir/metrics.jsonl" &&
    ! grep '"type":"train"' "$dir/metrics.jsonl" | tail -n 1 | grep -qiE '"loss":(nan|inf|null)'
}

if [ "$device" = cpu ]; then
  model=(--depth 18 --width 8)
  shapes=16x8x32,4x16x48
  few_shapes=4x16x48
  clips=120
else
  model=(--depth 50 --width 64)
  # The K400 multigrid recipe's per-GPU shapes (batch 8 per GPU).
  shapes=128x8x112,64x8x158,64x16x112,32x16x158,16x16x224,32x32x112,16x32x158,8x32x224
  few_shapes=128x8x112,8x32x224
  clips=600
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ), device $device"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
  "$bin" --version
  if [ "$device" = cpu ]; then
    check build-info 30 "$bin" build-info
  else
    check cuda 60 bash -c "'$bin' build-info | tee /dev/stderr | grep -q '^cuda linked' &&
      '$python' -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'"
  fi
  # Our SGD against torch.optim.SGD on the device (then one update of R50's parameters timed).
  check sgd-foreach 120 says_pass "$bin" bench sgd --device "$device" --python "$python" --out "$out/sgd"
  if [ "$device" != cpu ]; then
    check sgd-fused 120 says_pass "$bin" bench sgd --device "$device" --fused --python "$python" \
      --out "$out/sgd"
  fi
  # Seconds per step against PyTorch in the same run: every recipe shape in bf16, both layouts;
  # fp32 at the largest and smallest batch.
  # On CUDA each row also times the step captured as a CUDA graph and replayed.
  graphs=()
  [ "$device" = cpu ] || graphs=(--cuda-graphs)
  check step-bf16 240 "$bin" bench step --device "$device" "${model[@]}" --shapes "$shapes" \
    --steps 10 --memory-format contiguous,channels_last_3d --autocast --python "$python" \
    "${graphs[@]}"
  check step-fp32 120 "$bin" bench step --device "$device" "${model[@]}" --shapes "$few_shapes" \
    --steps 10 --memory-format contiguous,channels_last_3d --python "$python" "${graphs[@]}"
  # Gradients live in flat buckets with their parameters' strides (src/train/grads.rs): the
  # channels-last rows above must not draw libtorch's layout-contract warning.
  check grad-layout 5 bash -c "! grep -h 'layout contract' '$out/step-bf16.out' '$out/step-fp32.out'"
  # The trainer end to end: the tiny multigrid run in each precision (fp32 only on the CPU).
  [ -d "$out/data" ] || "$bin" gen-data --out "$out/data" --clips "$clips" --store --no-videos >/dev/null
  if [ "$device" = cpu ]; then
    precisions=(fp32)
  else
    precisions=(bf16 fp16 fp32)
  fi
  for precision in "${precisions[@]}"; do
    check "train-$precision" 180 trained "$out/train-$precision" "$bin" train \
      --config configs/synthetic_slowfast_tiny_multigrid.json --device "$device" \
      --data "$out/data" --set run.precision="$precision" --set solver.max_epoch=18 \
      --set run.log_period=20
  done
  # CUDA graphs per shape (run.cuda_graphs): the same runs captured and replayed must train
  # alike (losses within float tolerance; cuDNN's algorithms already differ run to run) and
  # report their step time against the eager runs above.
  if [ "$device" != cpu ]; then
    for precision in bf16 fp32; do
      check "graphs-$precision" 180 trained "$out/graphs-$precision" "$bin" train \
        --config configs/synthetic_slowfast_tiny_multigrid.json --device "$device" \
        --data "$out/data" --set run.precision="$precision" --set solver.max_epoch=18 \
        --set run.log_period=20 --set run.cuda_graphs=true
      check "graphs-equal-$precision" 10 says_pass "$python" - "$out/train-$precision" \
        "$out/graphs-$precision" <<'PY'
import json, sys
def lines(run):
    return [json.loads(l) for l in open(run + "/metrics.jsonl")]
eager, graphs = lines(sys.argv[1]), lines(sys.argv[2])
loss = lambda m: {v["step"]: v["loss"] for v in m if v["type"] == "train"}
a, b = loss(eager), loss(graphs)
steps = sorted(set(a) & set(b))[:10]
worst = max(abs(a[s] - b[s]) / max(abs(a[s]), 1e-6) for s in steps)
step_s = lambda m: next(v["step_s"] for v in m if v["type"] == "timing")
print(f"steps {steps[0]}..{steps[-1]}: largest relative loss difference {worst:.2e}; "
      f"step time eager {step_s(eager):.2f} s, graphs {step_s(graphs):.2f} s")
print("PASS" if worst < 2e-2 else "FAIL")
PY
    done
  fi
  # NCCL at world size 1, started through torchrun's environment with the backend named: the
  # trainer then runs its broadcast, bucketed gradient all-reduce and all-gathers through
  # ProcessGroupNCCL (tests/dist.rs proves the same path through MPI changes nothing).
  if [ "$device" != cpu ]; then
    check nccl-world1 120 trained "$out/train-nccl1" env RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 \
      LOCAL_WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511 "$bin" train \
      --config configs/synthetic_slowfast_tiny_multigrid.json --device "$device" \
      --data "$out/data" --set run.dist_backend=nccl --set run.dist_timeout_s=120 \
      --set solver.max_epoch=18
  fi
  # A single-pathway network (model.arch: I3D with a non-local block after res3 block 1)
  # through the same multigrid run: one pathway collated, staged and trained on the device.
  check train-i3d-nl 180 trained "$out/train-i3d-nl" "$bin" train \
    --config configs/synthetic_slowfast_tiny_multigrid.json --device "$device" \
    --data "$out/data" --set model.arch=i3d --set 'model.nonlocal_location=[[[]],[[1]],[[]],[[]]]' \
    --set solver.max_epoch=18 --set run.log_period=20
  echo "$passed passed, $failed failed"
} 2>&1 | tee "$out/gpu-check.log"
