"""Boot benchmark: Debian kernels to the VFS panic, the whole `pvmon run` vs QEMU TCG.

For each kernel (default debian-6.12 and debian-6.1) and guest mode (--modes,
default pv; pvh boots the same kernel as a Xen PVH guest), boots it --runs times
under pvmon and under QEMU's TCG (pure emulation, no KVM), each run in a fresh
process, up to "Kernel panic - not syncing: VFS: Unable to mount root fs"
(no root device and no initrd are given, so that is where every boot ends).

- pvmon: the command a user runs, `python -m pvmon run NAME [--mode M]
  [--record FILE]`, timed from spawn to exit (the figure reported: interpreter
  start-up, imports, kernel parsing and the trace's final flush included). The
  in-process time pvmon itself prints ("wall time", Session + run) is kept
  beside it, labelled in-process. The console must contain the VFS panic line.
- QEMU: `qemu-system-x86_64 -accel tcg -m 256 -display none -monitor none
  -no-reboot -serial file:LOG -kernel VMLINUZ -append "console=ttyS0 panic=-1"`,
  timed from spawn to exit (panic=-1 reboots at once, -no-reboot makes QEMU
  exit then). LOG must contain the VFS panic line. When qemu-system-x86_64 is
  missing, Debian's qemu-system-x86 package is installed with apt-get.

pvmon runs on whichever libunicorn it selects (`pvmon engine info`): the patched
build when `pvmon engine build` has made one, otherwise the pinned wheel's. The
header line says which. `--stock` adds a third engine, pvmon forced onto the
wheel's library (PVMON_UNICORN=stock), alternated with the others, so the
patch's effect is measured in the same stretch of the host.

Prints a table of medians (kernel, pvmon s, QEMU s, pvmon/QEMU) and every run's
times; `--json` prints one JSON document instead. The kernels must be cached
(`pvmon guests fetch debian-6.1 debian-6.12`).

Run: python bench/bench_boot.py [--kernels debian-6.12,debian-6.1] [--runs 3]
                                [--modes pv,pvh] [--record] [--timeout 600]
                                [--no-qemu] [--stock] [--json]
Exit status: 0 when every run reached the panic, 1 when a run failed, 2 on a
setup error (kernel not cached, QEMU unavailable).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PANIC = b"VFS: Unable to mount root fs"
DEFAULT_KERNELS = ("debian-6.12", "debian-6.1")
REPO = Path(__file__).resolve().parent.parent

class BenchError(Exception):
    """A setup problem that stops the benchmark (exit status 2)."""


def resolve_kernel(name: str):
    from pvmon.errors import PvmonError
    from pvmon.guests.catalog import resolve
    try:
        img = resolve(name)
    except PvmonError as exc:  # GuestNotFound etc. carry a readable message
        raise BenchError(f"cannot resolve guest {name!r}: {exc}") from None
    for attr in ("vmlinuz", "vmlinux"):
        p = getattr(img, attr, None)
        if not p or not Path(p).is_file():
            raise BenchError(f"{name}: {attr} not found ({p}); fetch it with "
                             f"`pvmon guests fetch {name}`")
    return img


def ensure_qemu(log) -> str:
    exe = shutil.which("qemu-system-x86_64")
    if exe:
        return exe
    log("qemu-system-x86_64 not found: installing Debian's qemu-system-x86 "
        "(apt-get install -y qemu-system-x86) ...")
    if not shutil.which("apt-get"):
        raise BenchError("qemu-system-x86_64 is missing and apt-get is not available; "
                         "install QEMU or pass --no-qemu")
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else [])
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = prefix + ["apt-get", "install", "-y", "--no-install-recommends", "qemu-system-x86"]

    def attempt(cmd) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, check=False)

    res = attempt(install)
    if res.returncode != 0:
        log("apt-get install failed; running apt-get update and retrying ...")
        upd = attempt(prefix + ["apt-get", "update"])
        if upd.returncode != 0:
            raise BenchError("apt-get update failed:\n" + upd.stdout[-2000:])
        res = attempt(install)
    if res.returncode != 0:
        raise BenchError("apt-get install qemu-system-x86 failed:\n" + res.stdout[-2000:])
    exe = shutil.which("qemu-system-x86_64")
    if not exe:
        raise BenchError("qemu-system-x86 installed but qemu-system-x86_64 is not on PATH")
    log(f"installed {exe}")
    return exe


def run_pvmon(name: str, timeout: float, stock: bool = False, mode: str = "pv",
              record: bool = False, backend: str | None = None, vcpus: int = 1) -> dict:
    """One `pvmon run` in a fresh process, timed whole; *stock* forces the
    wheel's libunicorn, *mode* the guest mode, *record* adds --record,
    *vcpus* above 1 adds --vcpus (docs/smp.md)."""
    import re
    env = dict(os.environ)
    if stock:
        env.pop("LIBUNICORN_PATH", None)
        env["PVMON_UNICORN"] = "stock"
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="pvmon-bench-boot-") as tmp:
        cmd = [sys.executable, "-m", "pvmon", "run", name]
        cmd += ["--backend", backend] if backend else ["--mode", mode]
        if record:
            cmd += ["--record", str(Path(tmp) / "boot.pvt")]
        if vcpus > 1:
            cmd += ["--vcpus", str(vcpus)]
        t0 = time.perf_counter()
        try:
            res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                                 timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"pvmon run did not finish within {timeout:g} s"}
        process_s = time.perf_counter() - t0
        trace_bytes = (Path(tmp) / "boot.pvt").stat().st_size if record else None
    err = res.stderr.decode("utf-8", "replace")
    m = re.search(r"wall time: ([0-9.]+) s", err)
    run = {"ok": PANIC in res.stdout, "wall_s": process_s,
           "in_process_s": float(m.group(1)) if m else None,
           "returncode": res.returncode, "console_bytes": len(res.stdout),
           "trace_bytes": trace_bytes}
    if not run["ok"]:
        tail = res.stdout[-800:].decode("utf-8", "replace")
        run["error"] = (f"console lacks the VFS panic line (pvmon exit {res.returncode}); "
                        f"stderr:\n{err[-800:]}\nconsole tail:\n{tail}")
    return run


def run_qemu(exe: str, vmlinuz: str, timeout: float, vcpus: int = 1) -> dict:
    with tempfile.TemporaryDirectory(prefix="pvmon-bench-qemu-") as tmp:
        log_path = Path(tmp) / "serial.log"
        cmd = [exe, "-accel", "tcg", "-m", "256", "-smp", str(vcpus), "-display", "none",
               "-monitor", "none",
               "-no-reboot", "-serial", f"file:{log_path}", "-kernel", vmlinuz,
               "-append", "console=ttyS0 panic=-1"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"ok": False, "error": f"QEMU did not exit within {timeout:g} s"}
        wall = time.perf_counter() - t0
        log = log_path.read_bytes() if log_path.exists() else b""
    run = {"ok": PANIC in log, "wall_s": wall, "returncode": proc.returncode,
           "serial_bytes": len(log)}
    if not run["ok"]:
        msg = out.decode("utf-8", "replace").strip()[-800:]
        tail = log[-800:].decode("utf-8", "replace")
        run["error"] = (f"serial log lacks the VFS panic line (QEMU exit {proc.returncode})"
                        + (f"\nQEMU said: {msg}" if msg else "")
                        + f"\nserial tail:\n{tail}")
    return run


def median_of(runs: list[dict]) -> float | None:
    times = [r["wall_s"] for r in runs if r.get("ok")]
    return statistics.median(times) if times else None


def report(results: list[dict], runs: int, qemu_version: str | None, title: str,
           as_json: bool) -> int:
    """Print the pvmon-vs-QEMU table (or JSON) of ``results`` (one entry per
    kernel with pvmon/qemu runs, medians and ratio); 1 if any run failed."""
    failed = sum(not r["ok"] for e in results
                 for r in e["pvmon"] + e["qemu"] + e.get("stock", []))
    if as_json:
        print(json.dumps({"runs": runs, "qemu": qemu_version, "failed_runs": failed,
                          "host_cpus": os.cpu_count(), "results": results}, indent=2))
    else:
        def cell(x, spec="8.2f"):
            return format(x, spec) if x is not None else format("-", ">" + spec.split(".")[0])

        def times(rs):
            return " ".join(f"{r['wall_s']:.2f}" if r["ok"] else "FAIL" for r in rs) or "-"

        print(f"{title}, {runs} run(s) each; medians in seconds of the whole command "
              "(process start to exit)" + (f"; {qemu_version}" if qemu_version else "")
              + f"; pvmon on {engine_label()}")
        print(f"{'kernel':<22} {'pvmon':>8} {'QEMU':>8} {'pvmon/QEMU':>10} {'in-proc':>8}   "
              f"{'pvmon runs':<24} QEMU runs")
        for e in results:
            inproc = [r["in_process_s"] for r in e["pvmon"] if r.get("ok") and r.get("in_process_s")]
            ip = statistics.median(inproc) if inproc else None
            print(f"{e['kernel']:<22} {cell(e['pvmon_median_s'])} {cell(e['qemu_median_s'])} "
                  f"{cell(e['ratio'], '10.2f')} {cell(ip)}   {times(e['pvmon']):<24} "
                  f"{times(e['qemu'])}")
        print("(pvmon and QEMU: whole process; in-proc: pvmon's own Session+run time, labelled "
              "as such, not the figure)")
        if any(e.get("stock") for e in results):
            print(f"{'wheel lib':<14} {'pvmon':>8} {'':>8} {'/patched':>10}   runs")
            for e in results:
                p, s = e["pvmon_median_s"], e["stock_median_s"]
                print(f"{e['kernel']:<14} {cell(s)} {'':>8} "
                      f"{cell(s / p if s and p else None, '10.2f')}   {times(e['stock'])}")
        if failed:
            print(f"{failed} run(s) failed; see the messages above")
    return 1 if failed else 0


def engine_label() -> str:
    """Which libunicorn `pvmon run` selects (`pvmon engine info`'s first lines)."""
    res = subprocess.run([sys.executable, "-m", "pvmon", "engine", "info"], cwd=REPO,
                         capture_output=True, text=True, check=False)
    patched = "patched: yes" in res.stdout
    return "the patched libunicorn" if patched else "the wheel's libunicorn"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", default=",".join(DEFAULT_KERNELS),
                    help="comma-separated guest names (default: %(default)s)")
    ap.add_argument("--runs", type=int, default=3, help="boots per kernel and engine")
    ap.add_argument("--timeout", type=float, default=600.0,
                    help="seconds before a single boot is abandoned")
    ap.add_argument("--no-qemu", action="store_true", help="skip the QEMU TCG comparison")
    ap.add_argument("--stock", action="store_true",
                    help="also boot pvmon on the wheel's libunicorn (PVMON_UNICORN=stock)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--modes", default="pv",
                    help="comma-separated guest modes to boot each kernel in (pv, pvh)")
    ap.add_argument("--record", action="store_true", help="pvmon runs record a trace (--record)")
    ap.add_argument("--backend", default=None,
                    help="boot on this backend instead of Xen in --modes (e.g. kvm-6.12)")
    ap.add_argument("--vcpus", type=int, default=1,
                    help="vCPUs of every boot (pvmon --vcpus, QEMU -smp; docs/smp.md)")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    if not kernels:
        ap.error("--kernels names no kernel")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    sys.path.insert(0, str(REPO))
    # Byte-compile pvmon first: with PYTHONDONTWRITEBYTECODE set (as in some CI
    # shells), every module changed since its last .pyc would otherwise be
    # compiled again in each timed run (about 45 ms of a 3 s boot, measured in
    # session 13), which a user's normal runs do once.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "pvmon")],
                   check=False, capture_output=True)
    try:
        images = {k: resolve_kernel(k) for k in kernels}
        qemu = None if args.no_qemu else ensure_qemu(log)
    except BenchError as exc:
        log(f"bench_boot: error: {exc}")
        return 2
    qemu_version = None
    if qemu:
        v = subprocess.run([qemu, "--version"], capture_output=True, text=True,
                           check=False)
        qemu_version = v.stdout.splitlines()[0] if v.stdout else None

    results = []
    modes = ([args.backend] if args.backend
             else [m.strip() for m in args.modes.split(",") if m.strip()])
    for name, mode in [(k, m) for k in kernels for m in modes]:
        img = images[name]
        label = name + ("" if mode == "pv" else f" {mode}") + (" +rec" if args.record else "") \
            + (f" x{args.vcpus}" if args.vcpus > 1 else "")
        backend = args.backend
        entry = {"kernel": label, "guest": name, "mode": mode, "record": args.record,
                 "vcpus": args.vcpus,
                 "version": getattr(img, "version", None),
                 "pvmon": [], "qemu": [], "stock": []}
        # pvmon and QEMU runs alternate, so a slow stretch of a shared host
        # weighs on both sides of the ratio alike.
        for i in range(args.runs):
            log(f"{name}: pvmon run {i + 1}/{args.runs} ...")
            r = run_pvmon(name, args.timeout, mode=mode, record=args.record, backend=backend,
                          vcpus=args.vcpus)
            entry["pvmon"].append(r)
            log(f"  {r['wall_s']:.2f} s" if r["ok"] else f"  FAILED: {r['error']}")
            if qemu:
                log(f"{name}: QEMU TCG run {i + 1}/{args.runs} ...")
                r = run_qemu(qemu, str(img.vmlinuz), args.timeout, args.vcpus)
                entry["qemu"].append(r)
                log(f"  {r['wall_s']:.2f} s" if r["ok"] else f"  FAILED: {r['error']}")
            if args.stock:
                log(f"{name}: pvmon on the wheel's libunicorn, run {i + 1}/{args.runs} ...")
                r = run_pvmon(name, args.timeout, stock=True, mode=mode, record=args.record,
                              backend=backend, vcpus=args.vcpus)
                entry["stock"].append(r)
                log(f"  {r['wall_s']:.2f} s" if r["ok"] else f"  FAILED: {r['error']}")
        entry["pvmon_median_s"] = median_of(entry["pvmon"])
        entry["qemu_median_s"] = median_of(entry["qemu"]) if qemu else None
        entry["stock_median_s"] = median_of(entry["stock"]) if args.stock else None
        p, q = entry["pvmon_median_s"], entry["qemu_median_s"]
        entry["ratio"] = p / q if p is not None and q else None
        results.append(entry)

    return report(results, args.runs, qemu_version, "boot to VFS panic", args.json)


if __name__ == "__main__":
    sys.exit(main())
