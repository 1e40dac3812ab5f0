#!/usr/bin/env bash
# Installs what the build needs from the system: libclang for the rocksdb
# crate's bindgen. Everything else comes from crates.io.
set -euo pipefail
# The base image has libclang-cpp but not libclang itself, which bindgen loads.
if ! ldconfig -p 2>/dev/null | grep -qE 'libclang(-[0-9.]+)?\.so'; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
fi
