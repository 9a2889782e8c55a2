#!/usr/bin/env bash
# One-shot setup on a fresh Debian machine with Python 3.11+: system tools the
# tests use (apt's own download tool, zstd for the trace tests, xen-utils-common for
# xenalyze and xentrace_format, gcc/binutils/make
# to check the built-in guests rebuild byte for byte, cmake/patch to build the
# engine's patched Unicorn; gdb for the gdb-stub tests; gcc also compiles pvmon's one C module, the recorder's
# hypercall-event packer, during pip install), pvmon itself, the patched Unicorn library (`pvmon
# engine build`: the pinned 2.1.4 sdist from PyPI plus pvmon's six patches, x86 only,
# about 30-40 s), and the three stock Debian kernels: debian-6.1 and debian-6.12 from
# bookworm, debian-7.2 from sid, each through pvmon's own apt source list and lists in
# its cache (never the system's; Debian's archive keyring checks them). debian-7.2 adds
# about 11 s on a cold cache (measured 2026-12-04: 10.7 s wall, 14 MB downloaded, 104 MB
# cached with sid's lists) and its tests would fetch it anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq zstd gcc binutils make tmux cmake patch debian-archive-keyring gdb >/dev/null
  # xenalyze and xentrace_format (bookworm: xen-utils-common 4.17), which the xentrace
  # export tests run on pvmon's exports. The package brings tools and libraries, not the
  # hypervisor (it only suggests xen-doc); it installs in a container without Xen.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    xen-utils-common >/dev/null
fi
python3 -m pip install -q -e ".[test]"
# An editable install, unlike a regular one, leaves pvmon's bytecode uncompiled; compile it
# now so that no run (nor a timed one) compiles 150 modules at start-up where the environment
# sets PYTHONDONTWRITEBYTECODE.
python3 -m compileall -q pvmon >/dev/null
pvmon engine build
if command -v apt-get >/dev/null 2>&1; then
  pvmon guests fetch debian-6.1 debian-6.12 debian-7.2 --initramfs busybox
  # the User-Mode Linux kernel (Debian's user-mode-linux, bookworm 6.1um4) the UML
  # tests record under ptrace: one binary kept in the cache, never installed
  pvmon guests fetch uml-6.1
fi
