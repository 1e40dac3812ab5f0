#!/usr/bin/env bash
# The test suite, as CI runs it (.ci/run): style checks, then everything in
# the `ci` profile (Cargo.toml): release code with debug_assert!s and
# overflow checks live, rocksdb's C++ compiled once.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all --check
cargo clippy --profile ci --workspace --all-targets -- -D warnings
cargo test --profile ci --workspace
# Benchmarks are not run here, only kept compiling.
cargo build --profile ci --benches
