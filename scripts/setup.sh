#!/usr/bin/env bash
# One-shot setup on a fresh Debian machine with Python 3.11+: system tools the
# tests use (apt's own download tool, zstd for the trace tests, gcc/binutils/make
# to check the built-in guests rebuild byte for byte), pvmon itself, and the two
# stock Debian kernels (fetched by package name with apt-get download).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq zstd gcc binutils make tmux >/dev/null
fi
python3 -m pip install -q -e ".[test]"
if command -v apt-get >/dev/null 2>&1; then
  pvmon guests fetch debian-6.1 debian-6.12 --initramfs busybox
fi
