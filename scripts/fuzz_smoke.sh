#!/usr/bin/env bash
# CI fuzz smoke run: build the cargo-fuzz targets of fuzz/ and run each one for a few
# seconds from its seed corpus (fuzz/corpus/<target>/). Any crash, panic, failed
# property, leak-free OOM (> 2 GB) or hang (> 10 s for one input) fails the run; the
# input that did it is left in $FUZZ_SMOKE_DIR (default: a temp folder) and named in
# the output.
#
#   scripts/fuzz_smoke.sh             every target, FUZZ_SECONDS (default 10) each
#   scripts/fuzz_smoke.sh tokenizer   one target
#
# Needs a nightly toolchain (`rustup toolchain install nightly`), or, failing that, a
# stable one run with RUSTC_BOOTSTRAP=1; and cargo-fuzz (installed here from crates.io
# when missing). Without either, it says so and exits 0: the smoke run is skipped, not
# failed. Long runs: see docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-10}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(model_file fusion_file set_file quantizer_file container tokenizer config_json)
fi

skip() {
    echo "fuzz smoke: SKIPPED: $*" >&2
    exit 0
}

if ! command -v cargo >/dev/null; then
    skip "no cargo on PATH"
fi
toolchain=()
if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
elif [ "${FUZZ_ALLOW_BOOTSTRAP:-1}" = 1 ] && rustc --version >/dev/null 2>&1; then
    echo "fuzz smoke: no nightly toolchain; using the default one with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
else
    skip "no nightly toolchain (rustup toolchain install nightly)"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: installing cargo-fuzz"
    cargo install --locked cargo-fuzz >/dev/null 2>&1 \
        || cargo install cargo-fuzz >/dev/null 2>&1 \
        || skip "cargo-fuzz is not installed and cannot be installed (cargo install cargo-fuzz)"
fi

target_dir=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/fuzz}
work=${FUZZ_SMOKE_DIR:-$(mktemp -d)}
echo "fuzz smoke: building ${#targets[@]} target(s) into $target_dir"
build=(cargo "${toolchain[@]}" fuzz build --target-dir "$target_dir")
if [ ${#targets[@]} -eq 1 ]; then
    build+=("${targets[0]}")
fi
"${build[@]}"

failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t"
    log="$work/$t.log"
    # Single process (no -jobs/-workers: those fork and log to fuzz-N.log).
    if RAYON_NUM_THREADS=1 cargo "${toolchain[@]}" fuzz run --target-dir "$target_dir" "$t" \
        "$work/corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/$t-" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
        echo "fuzz smoke: $t ok: ${runs:-?} runs, ${rate:-?} exec/s"
    else
        echo "fuzz smoke: $t FAILED; the end of its log ($log):" >&2
        tail -n 40 "$log" >&2
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz smoke: FAILED: ${failed[*]} (inputs under $work; reproduce with" \
        "cargo +nightly fuzz run <target> <input>)" >&2
    exit 1
fi
echo "fuzz smoke: all ${#targets[@]} target(s) passed"
