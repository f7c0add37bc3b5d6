# The two commands of the README: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/bash
ENV := . scripts/env.sh &&
# The no-libtorch build lives apart so the two feature sets do not rebuild each other.
NOTORCH_TARGET := target/notorch

.PHONY: all setup build release install demo bench-speedup test test-rust test-notorch test-python \
	lint header bench bench-loader gpu-bundle clean fuzz fuzz-smoke
PREFIX ?= /usr/local
# The Python that runs the bindings' tests (numpy, pytest and torch: the set-up's .venv).
PYTHON ?= $(or $(MG_PYTHON),.venv/bin/python)

all: build

setup:
	@scripts/setup.sh

# The SONAME is libmultigrid.so.MAJOR: programs linked against target/*/ look for that name.
MAJOR := $(shell sed -n 's/^version = "\([0-9]*\)\..*/\1/p' Cargo.toml | head -1)

build: setup
	$(ENV) cargo build
	ln -sfn libmultigrid.so target/debug/libmultigrid.so.$(MAJOR)

release: setup
	$(ENV) cargo build --release
	ln -sfn libmultigrid.so target/release/libmultigrid.so.$(MAJOR)

# Libraries, headers, pkg-config and CMake files under PREFIX (see scripts/install.sh).
install: release
	scripts/install.sh $(PREFIX) target/release

# The main job: synthetic data if missing, the tiny SlowFast trained with the baseline and the
# multigrid schedule, a side-by-side table and runs/demo/accuracy_vs_time.svg.
demo: setup
	$(ENV) cargo build --release --bin multigrid
	./target/release/multigrid demo

# The hard synthetic task (4000 clips), baseline and multigrid for 3 seeds each: accuracy,
# whole-run and time-to-accuracy ratios, time by shape, the task's criteria
# (runs/speedup/speedup.json and accuracy_vs_time.{svg,png}).
bench-speedup: setup
	$(ENV) cargo build --release --bin multigrid
	./target/release/multigrid bench speedup

test: setup lint test-rust test-python test-notorch fuzz-smoke

# `cargo test` alone does not link the cdylib that the C example tests load: build it first.
test-rust:
	$(ENV) cargo build && cargo test

# The ctypes package against this checkout's debug library (test-rust built it).
test-python:
	MULTIGRID_LIB=$(CURDIR)/target/debug/libmultigrid.so $(PYTHON) -m pytest -q bindings/python/tests

# Schedule, plan, their C API and `multigrid plan` with no libtorch anywhere.
test-notorch:
	$(ENV) unset LIBTORCH && export CARGO_TARGET_DIR=$(NOTORCH_TARGET) && \
	  cargo build --no-default-features && cargo test --no-default-features

lint:
	$(ENV) cargo fmt --check && cargo clippy --all-targets -- -D warnings

SYNTHETIC := data/synthetic

$(SYNTHETIC)/train.mgstore:
	./target/release/multigrid gen-data --out $(SYNTHETIC) --clips 1000 --store

$(SYNTHETIC)/train.mgframes: $(SYNTHETIC)/train.mgstore
	./target/release/multigrid build-store --data $(SYNTHETIC) --format jpeg --out $@

# Kinetics-sized frames for the loader at the K400 recipe's shapes: 330 clips of 64 frames at
# 256x256 as MP4, clip store (3.3 GB) and frame store.
LOADER_DATA := data/bench256

$(LOADER_DATA)/train.mgframes:
	./target/release/multigrid gen-data --out $(LOADER_DATA) --clips 330 --frames 64 --size 256 --store
	./target/release/multigrid build-store --data $(LOADER_DATA) --format jpeg --out $@

# Collation against PyTorch in Python on the same threads and against memcpy; then the
# loader's clips/s from MP4, the clip store and the frame store.
bench: setup
	$(ENV) cargo build --release --bin multigrid
	./target/release/multigrid bench collate
	$(MAKE) $(SYNTHETIC)/train.mgframes
	./target/release/multigrid bench loader --config configs/synthetic_slowfast_tiny_multigrid.json \
	  --data $(SYNTHETIC) --steps 30
	./target/release/multigrid bench step

# One core's clips/s from each source at every per-GPU shape of the K400 multigrid recipe
# (batch 8 per GPU), the bytes per hour of video, and the cores per GPU each source needs; then
# the loader with 2 workers over the first 12 steps (README, "Feeding the GPU").
bench-loader: setup
	$(ENV) cargo build --release --bin multigrid
	$(MAKE) $(LOADER_DATA)/train.mgframes
	./target/release/multigrid bench loader --config configs/kinetics_slowfast_8x8_r50_multigrid.json \
	  --data $(LOADER_DATA) --set train.batch_size=8 --per-shape
	./target/release/multigrid bench loader --config configs/kinetics_slowfast_8x8_r50_multigrid.json \
	  --data $(LOADER_DATA) --set train.batch_size=8 --workers 2 --steps 12

# Coverage-guided fuzzing on the stable toolchain, no libtorch (fuzz/README.md). `make fuzz` runs
# every target for FUZZ_SECONDS each (default 60), or FUZZ_RUNS inputs each when set;
# `make fuzz-smoke` runs each for 8 s after the build: 56 s of fuzzing, plus 2 min to build cold.
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?=
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_RUNS=$(FUZZ_RUNS) scripts/fuzz.sh all

fuzz-smoke:
	scripts/fuzz.sh smoke

# What the GPU machine runs (target/gpu-bundle/multigrid: libtorch only, stripped); there,
# scripts/gpu-check.sh runs every GPU check with a PASS/FAIL line each.
gpu-bundle: setup
	scripts/gpu-bundle.sh

# The C header and the Python declarations generated from it.
header:
	$(ENV) cbindgen --config cbindgen.toml --crate multigrid --output include/multigrid.h
	python3 scripts/gen_python_ffi.py

clean:
	cargo clean
