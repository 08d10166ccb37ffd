#!/usr/bin/env bash
# The whole test suite: unit tests (cargo test), then black-box tests (pytest) that start
# real bulwarkd processes and talk to them with real SMTP clients. README.md names this file.
set -euo pipefail
cd "$(dirname "$0")/.."
# YARA rules in the built-in anti-virus engine are an optional cargo feature (yara-x is large,
# see bench/RESULTS.md); the suite builds and tests with it, and the YARA tests fail without it.
features=(--features bulwark-mta/yara)
export BULWARK_REQUIRE_YARA=1
# One build profile for the whole suite: release, with YARA. yara-x (wasmtime, cranelift) is
# a long compile on CI's 2 cores, and building it twice (debug for the tests, release for the
# RPMs) put the suite over CI's time limit; the black-box tests run the release binaries
# (tests/conftest.py reads BULWARK_PROFILE), the RPM tests package them, and the unit tests
# reuse the same compiled dependencies.
# --examples: mime_texts parses delivered mail with mail-parser for tests/test_policy.py.
export BULWARK_PROFILE=release
cargo build --release --workspace --bins --examples "${features[@]}"
cargo test --release --workspace "${features[@]}"
python3 -m pytest tests -q -p no:cacheprovider "$@"
# Fuzzing smoke run: every target for 10 s (README: long runs). BULWARK_NO_FUZZ=1 skips it.
if [ -z "${BULWARK_NO_FUZZ:-}" ]; then
    fuzz/run.sh 10
fi
