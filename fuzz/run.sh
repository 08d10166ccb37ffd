#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 20; CI's smoke run uses 10).
# Long runs: `fuzz/run.sh 3600`, or one target: `cargo +nightly fuzz run data_decoder -- -jobs=2`.
# A crash leaves its input under fuzz/artifacts/TARGET/; turn it into a unit test in mta/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 1
fi
# One optimised build of all targets, then short runs (no rebuild per target).
cargo +nightly fuzz build -O
for target in $(cargo +nightly fuzz list); do
    echo "== fuzz $target for ${seconds}s"
    mkdir -p "corpus/$target"
    cargo +nightly fuzz run -O "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 2>&1 \
        | grep -E "^(stat::number_of_executed_units|#[0-9]+ +DONE|==[0-9]+==|SUMMARY|Test unit written)" || true
    if [ "${PIPESTATUS[0]}" -ne 0 ]; then
        echo "fuzz/run.sh: $target found a crash (see fuzz/artifacts/$target/)" >&2
        exit 1
    fi
done
