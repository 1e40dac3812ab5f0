#!/usr/bin/env bash
# Installs what the build and the tests need beyond the Rust toolchain:
# libclang for the rocksdb crate's bindgen, and DuckDB's Python package (to
# read exports back) in the virtual environment .venv, since a stock
# Debian or Ubuntu Python refuses pip installs outside one (PEP 668).
# Everything else comes from crates.io. Run again, it only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        $SUDO apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# The base image has libclang-cpp but not libclang itself, which bindgen loads.
if ! ldconfig -p 2>/dev/null | grep -qE 'libclang(-[0-9.]+)?\.so'; then
    apt_install libclang-dev
fi

# DuckDB reads satflow's Parquet exports back in tests/export.rs, which runs
# .venv/bin/python3.
venv=.venv
if ! "$venv/bin/python3" -c 'import duckdb' 2>/dev/null; then
    if ! "$venv/bin/python3" -m pip --version >/dev/null 2>&1; then
        # Debian ships venv's pip bootstrap (ensurepip) in python3-venv; a
        # failed attempt leaves a venv without pip behind, hence --clear.
        python3 -m venv --clear "$venv" 2>/dev/null || {
            apt_install python3-venv
            /usr/bin/python3 -m venv --clear "$venv"
        }
    fi
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check 'duckdb==2.0.1'
fi
