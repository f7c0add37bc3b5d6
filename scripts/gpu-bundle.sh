#!/usr/bin/env bash
# Builds here what the GPU machine runs (../shared/guides/gpu.md): the CLI with libtorch only (no
# FFmpeg, no Open MPI, which that machine lacks), stripped, in target/gpu-bundle/ (about 5 MB;
# libtorch stays dynamic and comes from that machine's torch wheel). Carry target/gpu-bundle
# with the repository and run scripts/gpu-check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
CARGO_TARGET_DIR=target/gpu cargo build --release --no-default-features --features torch \
  --bin multigrid
mkdir -p target/gpu-bundle
strip -o target/gpu-bundle/multigrid target/gpu/release/multigrid
size=$(du -k target/gpu-bundle | tail -1 | cut -f1)
echo "target/gpu-bundle: ${size} KiB (the device tool carries at most 64 MiB)"
echo "there: scripts/gpu-check.sh [OUT_DIR]   (carry: target/gpu-bundle)"
