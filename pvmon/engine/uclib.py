"""Which libunicorn pvmon runs on: the pinned wheel's, or the same version rebuilt
with pvmon's patches.

pvmon pins ``unicorn==2.1.4`` (the wheel from PyPI, every architecture). That
wheel's translated code calls ``helper_check_exit_request`` at the start of every
translation block, unconditionally (Unicorn's ``qemu/include/exec/gen-icount.h``,
``gen_tb_start``); the helper only acts when ``cpu->neg.icount_decr.u32`` is
negative, i.e. when ``uc_emu_stop`` or a hook asked the CPU to leave its loop.
Upstream QEMU tests that flag inline and branches past the exit. A Linux PV boot
executes hundreds of millions of small blocks (689 M for Debian's 6.1, most in
``xen_rebuild_p2m_list``, Linux ``arch/x86/xen/p2m.c``), and the helper took
18-22 % of all ``perf`` samples of that boot.

``patches/unicorn-2.1.4-tb-start-exit-check.patch`` makes ``gen_tb_start`` load
the flag and call the helper only when it is set. The helper returns at once when
the flag is clear, so this patch (and the TLB-dirty one) leaves the guest-visible
behaviour the same instruction for instruction; the third patch (below) is what
makes runs repeatable, which only the patched library guarantees. :func:`build`
downloads the pinned version's source distribution from PyPI
(``pip download``), applies the patches, builds the x86 target alone with CMake
(about 30-40 s of two cores) and installs ``libunicorn.so.2`` under
``<cache>/engine/unicorn-2.1.4-pvmon-<id>/``, where ``<id>`` hashes the version and
the patches, so a changed patch never reuses an old build. A build is only
installed after :func:`pvmon.engine.ucinternals.check_unicorn` passes on it in a
fresh process.

``patches/unicorn-2.1.4-tlb-resize-by-flush-count.patch`` makes runs repeatable.
QEMU resizes each TLB at flushes and shrinks it only once a 100 ms window of host
time has passed (``accel/tcg/cputlb.c``, ``tlb_mmu_resize_locked``), so the TLB's
size, and with it which entries a later fill evicts, depended on how fast the
host ran; a replayed Debian 6.1 busybox session took a different path (a trapped
page-table write instead of a hypercall) in about one run of two. The patch counts
the window in TLB flushes (a flush stands for 100 us, from the flush counters QEMU
keeps), so the same guest and inputs see the same TLB. On the wheel's library that
guarantee does not hold.

``patches/unicorn-2.1.4-notdirty-only-code-pages.patch`` sends a store to the
notdirty slow path only when the page holds translated code (or a memory hook or
snapshot covers it). Unicorn stubs out QEMU's dirty bitmap, so every writable
TLB entry started on the slow path and paid two address-space walks on its first
store after each TLB flush; a Debian 6.1 PV boot reloads CR3 35,000 times and made
7.7 million such stores (4-7 % of its CPU time). Guest-visible behaviour is the
same instruction for instruction (tests/test_engine_smc.py, the golden streams).

``patches/unicorn-2.1.4-debug-registers.patch`` gives a PV guest its debug
registers (:mod:`pvmon.engine.debugregs`): ``uc_reg_write`` of %dr7 inserts the
breakpoints it enables, QEMU's watchpoints are restored so data breakpoints
fire, and MOV to or from %drN asks pvmon first. Inert until a guest enables a
breakpoint (pvmon loads the registers only then).

``patches/unicorn-2.1.4-jmp-cache-generations.patch`` keeps the jump cache (the
guest-virtual PC -> translation block table that indirect jumps and returns use)
across TLB flushes: a flush bumps a generation, and an entry from an older one
is reused after the check the hash-table lookup would make (its PC still maps to
the block's physical page). QEMU empties the table on every flush, so each CR3
reload cost 32 KiB of stores and a hash-table lookup per indirect-jump target;
kept, the table can be four times larger (2^14 entries) for the kernel's code.

``patches/unicorn-2.1.4-tb-follow-jmp.patch`` lets a translation block go on at
the target of a direct JMP that lies ahead of it in the block's first page,
instead of ending there: one chained block exit fewer per JMP (Linux 6.1's
xen_rebuild_p2m_list loop runs 128 million times in a Xen PV boot, four blocks a
pass before, three after). Every code byte stays inside the block's span, so
self-modifying-code tracking is unchanged; off while any block or code hook is
installed (the SMP slicer's block budget, ``emu_start(count=)``), under
single-step, and outside 64-bit code (tests/test_engine_follow_jmp.py).

``patches/unicorn-2.1.4-rep-string-bulk.patch`` runs REP MOVS and REP STOS with
64-bit addresses a page at a time where every byte is RAM reachable through the
TLB as it stands with no flag (no translated code, no watchpoint, no MMIO), DF
clear and no overlap: QEMU runs them one element per pass through the block, and
a kernel that sees ERMS clears a 4 KiB page with 4096 passes of REP STOSB. Any
other case (a fault, a code page, a TLB miss) is an ordinary pass, so faults
leave the registers the architecture defines (tests/test_engine_rep_string.py).

``patches/unicorn-2.1.4-tb-follow-jcc.patch`` gives a translation block a third
chained exit (QEMU has two, so every Jcc ends its block) and lets a block go on
past one Jcc whose fall-through lies in its first page, the taken side leaving
by exit 2. A pass of Linux 6.1's xen_rebuild_p2m_list loop (three Jccs) runs in
two blocks instead of three. Off with the same hooks and modes as the JMP patch
(tests/test_engine_follow_jmp.py).

:func:`select` (called when ``pvmon.engine`` is imported, before anything imports
``unicorn``) points the binding at that library through ``LIBUNICORN_PATH``, the
variable Unicorn's own Python binding reads first (``unicorn_py3/unicorn.py``). It
changes nothing when the library is not built, when ``LIBUNICORN_PATH`` is already
set, or when ``PVMON_UNICORN=stock`` asks for the wheel's library.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pvmon.cache import cache_root
from pvmon.errors import EngineError

UNICORN_VERSION = "2.1.4"
"""The Unicorn release pvmon pins (pyproject.toml) and patches."""

PATCH_DIR = Path(__file__).with_name("patches")
PATCHES = ("unicorn-2.1.4-tb-start-exit-check.patch",
           "unicorn-2.1.4-tlb-reset-dirty-by-page.patch",
           "unicorn-2.1.4-tlb-resize-by-flush-count.patch",
           "unicorn-2.1.4-hvm-platform.patch",
           "unicorn-2.1.4-pv-privops.patch",
           "unicorn-2.1.4-notdirty-only-code-pages.patch",
           "unicorn-2.1.4-debug-registers.patch",
           "unicorn-2.1.4-jmp-cache-generations.patch",
           "unicorn-2.1.4-tb-follow-jmp.patch",
           "unicorn-2.1.4-rep-string-bulk.patch",
           "unicorn-2.1.4-tb-follow-jcc.patch")
"""Applied in this order with ``patch -p1`` inside the sdist's ``src/`` tree."""

LIB_NAME = "libunicorn.so.2"
STAMP_NAME = "build.json"
ENV_CHOICE = "PVMON_UNICORN"
"""``stock`` runs on the wheel's library even when the patched one is built."""


def build_id() -> str:
    """12 hex digits of sha256 over the pinned version and every patch's bytes."""
    h = hashlib.sha256(UNICORN_VERSION.encode())
    for name in PATCHES:
        h.update(name.encode())
        h.update((PATCH_DIR / name).read_bytes())
    return h.hexdigest()[:12]


def library_dir() -> Path:
    """``<cache>/engine/unicorn-<version>-pvmon-<build id>`` (may not exist)."""
    return cache_root() / "engine" / f"unicorn-{UNICORN_VERSION}-pvmon-{build_id()}"


def built_library() -> Path | None:
    """The installed patched library, or None when :func:`build` has not run."""
    d = library_dir()
    lib = d / LIB_NAME
    return lib if lib.is_file() and (d / STAMP_NAME).is_file() else None


def select() -> None:
    """Point Unicorn's binding at the patched library when it is built.

    Must run before the first ``import unicorn`` of the process; afterwards it does
    nothing. Leaves an explicit ``LIBUNICORN_PATH`` alone, and with
    ``PVMON_UNICORN=stock`` keeps the wheel's library.
    """
    if "unicorn" in sys.modules or "LIBUNICORN_PATH" in os.environ:
        return
    if os.environ.get(ENV_CHOICE, "").strip().lower() == "stock":
        return
    try:
        lib = built_library()
    except OSError:
        return
    if lib is not None:
        os.environ["LIBUNICORN_PATH"] = str(lib.parent)


def describe() -> dict:
    """What this process runs on: ``{"unicorn": version, "library": path,
    "patched": bool, "patches": [names], "build": stamp or None}``.

    Imports ``unicorn`` (so :func:`select` has had its chance when called from
    ``pvmon.engine``).
    """
    import unicorn
    from unicorn.unicorn_py3.unicorn import uclib

    path = Path(getattr(uclib, "_name", "") or "?")
    built = built_library()
    patched = built is not None and path.resolve() == built.resolve()
    stamp = None
    if patched:
        try:
            stamp = json.loads((built.parent / STAMP_NAME).read_text())
        except (OSError, ValueError):
            stamp = None
    return {
        "unicorn": unicorn.__version__,
        "library": str(path),
        "patched": patched,
        "patches": list(PATCHES) if patched else [],
        "build": stamp,
    }


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise EngineError(f"building the patched Unicorn needs {tool!r}, which is not "
                          f"installed (Debian: apt-get install cmake patch gcc make)")
    return path


def _run(cmd: list[str], what: str, log_path: Path, env: dict | None = None) -> None:
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        rc = subprocess.run(cmd, check=False, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise EngineError(f"{what} failed (exit {rc}): {tail[0][:200]} "
                          f"(full log: {log_path})")


def build(sdist: Path | None = None, jobs: int | None = None, force: bool = False,
          say: Callable[[str], None] = print) -> Path:
    """Build and install the patched x86 libunicorn; return its path.

    *sdist*: a ``unicorn-2.1.4.tar.gz`` to use instead of downloading one from
    PyPI. *jobs*: parallel compile jobs (default: CPU count). A current build is
    kept unless *force*. Raises :class:`EngineError` (one line, pointing at the
    build log) when a tool is missing, the download, patch, configure or compile
    fails, or the result fails :func:`~pvmon.engine.ucinternals.check_unicorn`.
    """
    existing = built_library()
    if existing is not None and not force:
        say(f"patched Unicorn {UNICORN_VERSION} already built: {existing}")
        return existing
    for tool in ("cmake", "patch", "make"):
        _need(tool)
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        _need("cc")
    dest = library_dir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    log_path = dest.parent / f"build-{build_id()}.log"
    log_path.write_text("")
    jobs = jobs or os.cpu_count() or 1
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pvmon-unicorn-") as tmp:
        tmpd = Path(tmp)
        if sdist is None:
            say(f"downloading the unicorn {UNICORN_VERSION} source distribution (pip download)")
            _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                  "--no-binary", ":all:", "-d", str(tmpd),
                  f"unicorn=={UNICORN_VERSION}"], "pip download", log_path)
            found = sorted(tmpd.glob(f"unicorn-{UNICORN_VERSION}.tar.gz"))
            if not found:
                raise EngineError(f"pip download left no unicorn-{UNICORN_VERSION}.tar.gz "
                                  f"(full log: {log_path})")
            sdist = found[0]
        if not Path(sdist).is_file():
            raise EngineError(f"no such source distribution: {sdist}")
        try:
            with tarfile.open(sdist) as tar:
                tar.extractall(tmpd / "x", filter="data")
        except (tarfile.TarError, OSError, ValueError) as exc:
            why = " ".join(str(exc).split())
            raise EngineError(f"cannot unpack {sdist}: {why}") from None
        src = tmpd / "x" / f"unicorn-{UNICORN_VERSION}" / "src"
        if not (src / "CMakeLists.txt").is_file():
            raise EngineError(f"{sdist} is not the unicorn {UNICORN_VERSION} sdist "
                              f"(no src/CMakeLists.txt)")
        for name in PATCHES:
            say(f"applying {name}")
            _run(["patch", "-p1", "--forward", "-d", str(src), "-i", str(PATCH_DIR / name)],
                 f"patch {name}", log_path)
        say(f"compiling the x86 target ({jobs} jobs; about 30-40 s on two cores)")
        bdir = tmpd / "build"
        _run(["cmake", "-S", str(src), "-B", str(bdir), "-DCMAKE_BUILD_TYPE=Release",
              "-DUNICORN_BUILD_TESTS=off", "-DUNICORN_ARCH=x86"], "cmake configure", log_path)
        _run(["cmake", "--build", str(bdir), "-j", str(jobs)], "cmake build", log_path)
        lib = bdir / LIB_NAME
        if not lib.is_file():
            raise EngineError(f"the build produced no {LIB_NAME} (full log: {log_path})")
        stage = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp", dir=dest.parent))
        try:
            shutil.copy2(lib, stage / LIB_NAME)
            say("checking the engine's Unicorn assumptions on the new library")
            probe = ("from pvmon.engine import ucinternals\n"
                     "from unicorn.unicorn_py3.unicorn import uclib\n"
                     f"assert uclib._name.startswith({str(stage)!r}), uclib._name\n"
                     "ucinternals.check_unicorn()\n")
            _run([sys.executable, "-c", probe], "the self-test on the new library", log_path,
                 env={**os.environ, "LIBUNICORN_PATH": str(stage)})
            stamp = {
                "unicorn": UNICORN_VERSION,
                "patches": {n: hashlib.sha256((PATCH_DIR / n).read_bytes()).hexdigest()
                            for n in PATCHES},
                "sha256": hashlib.sha256((stage / LIB_NAME).read_bytes()).hexdigest(),
                "compiler": _compiler(),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_s": round(time.monotonic() - t0, 1),
            }
            (stage / STAMP_NAME).write_text(json.dumps(stamp, indent=1) + "\n")
            if dest.exists():
                shutil.rmtree(dest)
            stage.rename(dest)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
    say(f"installed {dest / LIB_NAME} in {time.monotonic() - t0:.0f} s")
    return dest / LIB_NAME


def _compiler() -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "?"
    out = subprocess.run([cc, "--version"], check=False, capture_output=True,
                         text=True).stdout
    return out.splitlines()[0] if out else "?"
