#!/usr/bin/env bash
# Coverage-guided fuzzing on the stable toolchain (fuzz/README.md): libFuzzer from the
# libfuzzer-sys crate, Rust code instrumented with rustc's stable SanitizerCoverage flags, the
# library built without libtorch (`--no-default-features --features video`).
#
#   scripts/fuzz.sh build                 build every target (target/fuzz/)
#   scripts/fuzz.sh run TARGET [ARGS...]  run one target; ARGS go to libFuzzer
#   scripts/fuzz.sh all                   each target for FUZZ_SECONDS (default 60) or FUZZ_RUNS inputs
#   scripts/fuzz.sh smoke                 build, then each target for SMOKE_SECONDS (default 8)
#   scripts/fuzz.sh regress               replay fuzz/regressions/TARGET/* once (fails while a bug is open)
#   scripts/fuzz.sh seeds                 regenerate fuzz/corpus/ (store and video seeds)
#   scripts/fuzz.sh list                  the target names
#
# FUZZ_TARGETS="store mp4" limits all/smoke/regress to some targets. New corpus entries go to
# target/fuzz/corpus/TARGET (the committed seeds in fuzz/corpus/TARGET are only read), crashes
# to target/fuzz/artifacts/TARGET/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGETS_ALL=(schedule_plan collate store frame_store video_list frame_list mp4)
read -r -a TARGETS <<<"${FUZZ_TARGETS:-${TARGETS_ALL[*]}}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$ROOT/target/fuzz}"
HOST=$(rustc -vV | sed -n 's/^host: //p')
BIN_DIR="$CARGO_TARGET_DIR/$HOST/release"
# libtorch plays no part here; an inherited LIBTORCH would only slow the resolver down.
unset LIBTORCH
# Panics (every library bug the boundary would catch) print their backtrace before the abort.
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

# Stable rustc flags: SanitizerCoverage's module pass with libFuzzer's inline 8-bit counters,
# PC table and comparison tracing (the set cargo-fuzz passes, without -Zsanitizer), plus
# debug assertions and overflow checks so arithmetic bugs panic. Passing --target keeps them
# off build scripts and proc macros.
FUZZ_RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=3 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks -Cforce-frame-pointers=yes"

# Per target: the largest input libFuzzer makes, and its dictionary.
max_len() {
	case "$1" in
	schedule_plan) echo 4096 ;;
	collate) echo 512 ;;
	store) echo 8192 ;;
	frame_store) echo 8192 ;;
	video_list) echo 1024 ;;
	frame_list) echo 1024 ;;
	mp4) echo 16384 ;;
	*) echo "unknown target $1 (one of: ${TARGETS_ALL[*]})" >&2; exit 2 ;;
	esac
}
dict() {
	case "$1" in
	schedule_plan) echo fuzz/dict/config.dict ;;
	store) echo fuzz/dict/store.dict ;;
	frame_store) echo fuzz/dict/frame_store.dict ;;
	video_list) echo fuzz/dict/csv.dict ;;
	frame_list) echo fuzz/dict/frames.dict ;;
	mp4) echo fuzz/dict/mp4.dict ;;
	*) echo "" ;;
	esac
}

build() {
	local bins=()
	for t in "${TARGETS_ALL[@]}"; do bins+=(--bin "$t"); done
	local start=$SECONDS
	RUSTFLAGS="$FUZZ_RUSTFLAGS" cargo build --release --manifest-path fuzz/Cargo.toml \
		--target "$HOST" "${bins[@]}"
	echo "fuzz: build took $((SECONDS - start)) s" >&2
}

# run TARGET [libFuzzer args...]
run() {
	local t=$1
	shift
	local bin="$BIN_DIR/$t"
	[[ -x $bin ]] || { echo "fuzz: $bin is not built; run scripts/fuzz.sh build" >&2; exit 1; }
	local work="$CARGO_TARGET_DIR/corpus/$t" art="$CARGO_TARGET_DIR/artifacts/$t/"
	mkdir -p "$work" "$art" "fuzz/corpus/$t"
	local args=(-max_len="$(max_len "$t")" -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -timeout=10
		-artifact_prefix="$art" -print_final_stats=1)
	local d
	d=$(dict "$t")
	[[ -n $d ]] && args+=(-dict="$d")
	"$bin" "${args[@]}" "$@" "$work" "fuzz/corpus/$t"
}

# Each target in turn, one process (the machine's other cores stay free).
run_all() {
	local limit=()
	if [[ -n ${FUZZ_RUNS:-} ]]; then
		limit=(-runs="$FUZZ_RUNS")
	else
		limit=(-max_total_time="${FUZZ_SECONDS:-60}")
	fi
	local failed=()
	for t in "${TARGETS[@]}"; do
		echo "=== fuzz $t (${limit[*]}) ===" >&2
		local start=$SECONDS
		if run "$t" "${limit[@]}" "$@"; then
			echo "=== fuzz $t: ok in $((SECONDS - start)) s ===" >&2
		else
			echo "=== fuzz $t: FAILED (see target/fuzz/artifacts/$t/) ===" >&2
			failed+=("$t")
		fi
	done
	if ((${#failed[@]})); then
		echo "fuzz: failures in: ${failed[*]}" >&2
		exit 1
	fi
}

regress() {
	local status=0
	for t in "${TARGETS[@]}"; do
		local files=(fuzz/regressions/"$t"/*)
		[[ -e ${files[0]} ]] || continue
		echo "=== regress $t: ${#files[@]} inputs ===" >&2
		for f in "${files[@]}"; do
			if MG_FUZZ_HIT_KNOWN=1 "$BIN_DIR/$t" -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -timeout=10 "$f" >/dev/null 2>&1; then
				echo "ok    $f" >&2
			else
				echo "FAIL  $f" >&2
				status=1
			fi
		done
	done
	return $status
}

cmd=${1:-}
shift || true
case "$cmd" in
build) build ;;
run) [[ $# -ge 1 ]] || { echo "usage: $0 run TARGET [libFuzzer args]" >&2; exit 2; }
	run "$@" ;;
all) build && run_all "$@" ;;
smoke)
	start=$SECONDS
	build
	built=$SECONDS
	FUZZ_RUNS="" FUZZ_SECONDS="${SMOKE_SECONDS:-8}" run_all "$@"
	echo "fuzz smoke: build $((built - start)) s, fuzzing $((SECONDS - built)) s" >&2 ;;
regress) build && regress ;;
seeds)
	# A plain build (no fuzzing flags, no --target): its own directory under target/fuzz.
	cargo run --release --manifest-path fuzz/Cargo.toml --bin gen-seeds ;;
list) printf '%s\n' "${TARGETS_ALL[@]}" ;;
*) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
