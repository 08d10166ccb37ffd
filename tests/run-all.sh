#!/usr/bin/env bash
# The whole test suite: unit tests (cargo test), then black-box tests (pytest) that start
# real bulwarkd processes and talk to them with real SMTP clients. README.md names this file.
set -euo pipefail
cd "$(dirname "$0")/.."
# YARA rules in the built-in anti-virus engine are an optional cargo feature (yara-x is large,
# see bench/RESULTS.md); the suite builds and tests with it, and the YARA tests fail without it.
features=(--features bulwark-mta/yara)
export BULWARK_REQUIRE_YARA=1
# --examples: mime_texts parses delivered mail with mail-parser for tests/test_policy.py.
cargo build --workspace --bins --examples "${features[@]}"
# The RPMs in tests/test_packaging.py package release binaries: built once here, shared.
cargo build --release --workspace --bins "${features[@]}"
cargo test --workspace "${features[@]}"
python3 -m pytest tests -q -p no:cacheprovider "$@"
# Fuzzing smoke run: every target for 10 s (README: long runs). BULWARK_NO_FUZZ=1 skips it.
if [ -z "${BULWARK_NO_FUZZ:-}" ]; then
    fuzz/run.sh 10
fi
