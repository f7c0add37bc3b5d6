#!/usr/bin/env bash
# Installs what building and testing need, and nothing twice: system packages only when
# missing, libtorch (PyPI's torch==2.11.0 in .venv) only when LIBTORCH is unset and .venv lacks
# it, cbindgen only when the pinned version is absent. A second run does no network work.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
CBINDGEN_VERSION=0.29.4
# FFmpeg's libraries and clang (bindgen) for the `video` feature (ffmpeg-next).
# cmake: the install test builds a consumer project with find_package(multigrid).
# Open MPI: the collective engine of CPU ranks (the `mpi` feature) and the mpirun launcher.
# DejaVu Sans: the font the benchmarks' charts are drawn with (plotters' ab_glyph text).
APT_PACKAGES=(gcc g++ make cmake pkg-config python3 valgrind fonts-dejavu-core
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev libavfilter-dev libavdevice-dev
  clang libclang-dev
  libopenmpi-dev openmpi-bin)

log() { printf 'setup: %s\n' "$*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || { log "cargo not found: install Rust (rustup) first"; exit 1; }

if [ -n "${LIBTORCH:-}" ]; then
  [ -e "$LIBTORCH/lib/libtorch.so" ] || { log "LIBTORCH=$LIBTORCH has no lib/libtorch.so"; exit 1; }
  log "using LIBTORCH=$LIBTORCH"
else
  # numpy and safetensors serve the PyTorch reference scripts the tests compare against;
  # pytest runs the Python bindings' tests.
  # nvidia-cuda-crt and nvidia-cuda-cccl (cuda-toolkit 13.0.2's pins, matching the wheel's
  # CUDA) hold crt/host_config.h and nv/target, which ProcessGroupNCCL.hpp includes: build.rs
  # compiles the NCCL backend of the C++ bridge (src/bridge/bridge.cpp) only when they are there.
  stamp=.venv/.multigrid-venv-4-torch-$TORCH_VERSION
  if [ ! -e "$stamp" ]; then
    pkgs=(nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85)
    if [ ! -e .venv/.multigrid-venv-3-torch-$TORCH_VERSION ]; then
      log "installing torch==$TORCH_VERSION, numpy, safetensors, pytest into .venv (about 4.6 GB, once)"
      python3 -m venv .venv
      pkgs=("torch==$TORCH_VERSION" numpy safetensors pytest "${pkgs[@]}")
    else
      log "adding the CUDA headers NCCL needs (nvidia-cuda-crt, nvidia-cuda-cccl) to .venv"
    fi
    .venv/bin/pip install -q --disable-pip-version-check "${pkgs[@]}"
    rm -f .venv/.multigrid-venv-3-torch-$TORCH_VERSION
    touch "$stamp"
  fi
  # .cargo/config.toml sets LIBTORCH to .venv/libtorch for every cargo command (plain cargo
  # too): one name for the wheel's torch directory, whatever the python3.X in its path.
  torch_dirs=(.venv/lib/python3*/site-packages/torch)
  [ -e "${torch_dirs[0]}/lib/libtorch.so" ] || { log "no torch wheel in .venv (${torch_dirs[0]})"; exit 1; }
  link="${torch_dirs[0]#.venv/}"
  [ "$(readlink .venv/libtorch 2>/dev/null)" = "$link" ] || ln -sfn "$link" .venv/libtorch
fi

if [ "$(cbindgen --version 2>/dev/null)" != "cbindgen $CBINDGEN_VERSION" ]; then
  log "installing cbindgen $CBINDGEN_VERSION"
  cargo install -q cbindgen --version "=$CBINDGEN_VERSION" --locked
fi
log "ready"
