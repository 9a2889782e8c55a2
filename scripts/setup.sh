#!/usr/bin/env bash
# One-shot setup on a fresh Debian machine with Python 3.11+: system tools the
# tests use (apt's own download tool, zstd for the trace tests, gcc/binutils/make
# to check the built-in guests rebuild byte for byte, cmake/patch to build the
# engine's patched Unicorn; gcc also compiles pvmon's one C module, the recorder's
# hypercall-event packer, during pip install), pvmon itself, the patched Unicorn library (`pvmon
# engine build`: the pinned 2.1.4 sdist from PyPI plus pvmon's three patches, x86 only,
# about 30-40 s), and the two stock Debian kernels (fetched by package name with
# apt-get download).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq zstd gcc binutils make tmux cmake patch >/dev/null
fi
python3 -m pip install -q -e ".[test]"
pvmon engine build
if command -v apt-get >/dev/null 2>&1; then
  pvmon guests fetch debian-6.1 debian-6.12 --initramfs busybox
fi
