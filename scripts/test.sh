#!/usr/bin/env bash
# The test suite, as CI runs it (.ci/run): style checks, the unit tests in
# the debug profile (so that debug_assert!s and overflow checks run), then
# everything in release (the profile the benchmarks use).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all --check
# Release, like the tests below: rocksdb's C++ is compiled once for both.
cargo clippy --release --workspace --all-targets -- -D warnings
cargo test --release --workspace
# Benchmarks are not run here, only kept compiling.
cargo build --release --benches
# Unit tests only: the end-to-end suite in debug would take most of CI's time.
cargo test --workspace --lib --bins
