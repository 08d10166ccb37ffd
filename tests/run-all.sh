#!/usr/bin/env bash
# The whole test suite: unit tests (cargo test), then black-box tests (pytest) that start
# real bulwarkd processes and talk to them with real SMTP clients. README.md names this file.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
# The RPMs in tests/test_packaging.py package release binaries: built once here, shared.
cargo build --release --workspace --bins
cargo test --workspace
python3 -m pytest tests -q -p no:cacheprovider "$@"
# Fuzzing smoke run: every target for 10 s (README: long runs). BULWARK_NO_FUZZ=1 skips it.
if [ -z "${BULWARK_NO_FUZZ:-}" ]; then
    fuzz/run.sh 10
fi
