# The two commands of the README: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/bash
ENV := . scripts/env.sh &&
# The no-libtorch build lives apart so the two feature sets do not rebuild each other.
NOTORCH_TARGET := target/notorch

.PHONY: all setup build release demo test test-rust test-notorch lint header bench clean

all: build

setup:
	@scripts/setup.sh

build: setup
	$(ENV) cargo build

release: setup
	$(ENV) cargo build --release

# The main job: synthetic data if missing, the tiny SlowFast trained with the baseline and the
# multigrid schedule, a side-by-side table and runs/demo/accuracy_vs_time.svg.
demo: setup
	$(ENV) cargo build --release --bin multigrid
	./target/release/multigrid demo

test: setup lint test-rust test-notorch

# `cargo test` alone does not link the cdylib that the C example tests load: build it first.
test-rust:
	$(ENV) cargo build && cargo test

# Schedule, plan, their C API and `multigrid plan` with no libtorch anywhere.
test-notorch:
	$(ENV) unset LIBTORCH && export CARGO_TARGET_DIR=$(NOTORCH_TARGET) && \
	  cargo build --no-default-features && cargo test --no-default-features

lint:
	$(ENV) cargo fmt --check && cargo clippy --all-targets -- -D warnings

SYNTHETIC := data/synthetic

$(SYNTHETIC)/train.mgstore:
	./target/release/multigrid gen-data --out $(SYNTHETIC) --clips 1000 --store

# Collation against PyTorch in Python on the same threads and against memcpy; then the
# loader's clips/s from MP4 and from the clip store.
bench: setup
	$(ENV) cargo build --release --bin multigrid
	./target/release/multigrid bench collate
	$(MAKE) $(SYNTHETIC)/train.mgstore
	./target/release/multigrid bench loader --config configs/synthetic_slowfast_tiny_multigrid.json \
	  --data $(SYNTHETIC) --steps 30
	./target/release/multigrid bench step

header:
	$(ENV) cbindgen --config cbindgen.toml --crate multigrid --output include/multigrid.h

clean:
	cargo clean
