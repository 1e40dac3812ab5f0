#!/usr/bin/env bash
# The test suite, as CI runs it: everything in release (the profile the
# benchmarks use), so rocksdb's C++ is compiled once.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --release --workspace
# Benchmarks are not run here, only kept compiling.
cargo build --release --benches
