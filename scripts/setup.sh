#!/usr/bin/env bash
# Installs what the build and the tests need beyond the Rust toolchain:
# libclang for the rocksdb crate's bindgen, DuckDB's Python package to read
# exports back. Everything else comes from crates.io.
set -euo pipefail
# The base image has libclang-cpp but not libclang itself, which bindgen loads.
if ! ldconfig -p 2>/dev/null | grep -qE 'libclang(-[0-9.]+)?\.so'; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
fi
# DuckDB reads satflow's Parquet exports back in tests/export.rs.
if ! python3 -c 'import duckdb' 2>/dev/null; then
    python3 -m pip install --quiet --root-user-action=ignore 'duckdb==2.0.1'
fi
