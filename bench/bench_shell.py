"""Shell benchmark: Debian PV kernels with the busybox initramfs to the shell prompt,
pvmon vs QEMU TCG.

For each kernel (default debian-6.12 and debian-6.1) and the same initramfs
(`pvmon guests fetch --initramfs busybox`; built from Debian's busybox-static),
boots --runs times under pvmon and under QEMU's TCG, each run in a fresh
process, until the shell prompt ("~ # ", set by the initramfs's /init) appears
on the console after "Run /init as init process".

- pvmon: a fresh `python -c` process builds `Session(img, initrd=...)` (on
  --backend, default xen-4.17, with its guest kind's command line) and runs it;
  a console listener stops the machine at the prompt. The time reported is the
  whole process, from spawn to its exit right after the prompt (interpreter
  start-up and imports included); `Session(...)` + `run()` up to the prompt is
  kept beside it as the labelled in-process time.
- QEMU: `qemu-system-x86_64 -accel tcg -m 256 -display none -monitor none
  -no-reboot -serial stdio -kernel VMLINUZ -initrd INITRAMFS -append
  "console=ttyS0 panic=-1"`, timed from spawn until the prompt is read from its
  serial output; then QEMU is killed. QEMU comes from Debian's qemu-system-x86
  (installed with apt-get when missing, as bench_boot.py does).

Prints a table of medians (kernel, pvmon s, QEMU s, pvmon/QEMU) and every run;
`--json` prints one JSON document instead.

Run: python bench/bench_shell.py [--kernels debian-6.12,debian-6.1] [--runs 3]
                                 [--timeout 600] [--no-qemu] [--json]
Exit status: 0 when every run reached the prompt, 1 when a run failed, 2 on a
setup error.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_boot import (
    DEFAULT_KERNELS,
    REPO,
    BenchError,
    ensure_qemu,
    median_of,
    report,
    resolve_kernel,
)

PROMPT = b"~ # "
INIT = b"Run /init as init process"

PVMON_SNIPPET = r"""
import json, sys, time
from pvmon.engine import uclib
from pvmon.engine.machine import Stop
from pvmon.guests.catalog import resolve
from pvmon.guests.initramfs import initramfs_path
from pvmon.session import Session
img = resolve(sys.argv[1])
initrd = initramfs_path("busybox").read_bytes()
backend = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else "xen-4.17"
from pvmon.backends.registry import get_backend, guest_kind
from pvmon.session import DEFAULT_CMDLINE
cmdline = getattr(guest_kind(get_backend(backend)), "default_cmdline", None) or DEFAULT_CMDLINE
t0 = time.perf_counter()
s = Session(img, initrd=initrd, initrd_info={"name": "busybox"}, backend=backend,
            cmdline=cmdline)
seen = bytearray()
at = {}
def watch(ch, data):
    seen.extend(data)
    i = seen.find(b"Run /init as init process")
    if "prompt" not in at and i >= 0 and seen.find(b"~ # ", i) >= 0:
        at["prompt"] = time.perf_counter() - t0
        s.machine.stop(Stop("limit", "shell prompt reached"))
s.on_console(watch)
r = s.run(timeout=float(sys.argv[2]))
print(json.dumps({"wall_s": at.get("prompt"), "ok": "prompt" in at, "exit_kind": r.exit_kind,
                  "detail": r.detail, "vtime_ns": r.vtime_ns,
                  "hypercalls": sum(r.hypercalls.values()),
                  "patched_unicorn": uclib.describe()["patched"],
                  "tail": bytes(seen[-800:]).decode("utf-8", "replace")}))
"""


def run_pvmon(name: str, timeout: float, backend: str = "") -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
    t0 = time.perf_counter()
    try:
        res = subprocess.run([sys.executable, "-c", PVMON_SNIPPET, name, str(timeout), backend],
                             cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=timeout + 60, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"pvmon did not finish within {timeout:g} s"}
    process_s = time.perf_counter() - t0
    try:
        out = json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        err = (res.stderr or res.stdout).strip()[-1500:]
        return {"ok": False, "error": f"pvmon exited {res.returncode} without a result:\n{err}"}
    # the figure: the whole process, from spawn to its exit right after the prompt
    # (start-up included); pvmon's own time to the prompt is kept beside it
    run = {"ok": out["ok"], "wall_s": process_s, "in_process_s": out["wall_s"],
           "process_s": process_s,
           "vtime_ns": out["vtime_ns"], "hypercalls": out["hypercalls"],
           "patched_unicorn": out["patched_unicorn"]}
    if not out["ok"]:
        run["error"] = (f"no shell prompt (exit {out['exit_kind']}: {out['detail']}); "
                        f"console tail:\n{out['tail']}")
    return run


def run_qemu(exe: str, vmlinuz: str, initrd: str, timeout: float) -> dict:
    cmd = [exe, "-accel", "tcg", "-m", "256", "-display", "none", "-monitor", "none",
           "-no-reboot", "-serial", "stdio", "-kernel", vmlinuz, "-initrd", initrd,
           "-append", "console=ttyS0 panic=-1"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    seen = bytearray()
    wall = None
    try:
        while time.perf_counter() - t0 < timeout:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
            i = seen.find(INIT)
            if i >= 0 and seen.find(PROMPT, i) >= 0:
                wall = time.perf_counter() - t0
                break
    finally:
        proc.kill()
        proc.wait()
    if wall is None:
        return {"ok": False, "error": "no shell prompt on the serial console; tail:\n"
                + seen[-800:].decode("utf-8", "replace")}
    return {"ok": True, "wall_s": wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", default=",".join(DEFAULT_KERNELS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--backend", default="",
                    help="boot on this backend (default xen-4.17), e.g. kvm-6.12")
    args = ap.parse_args()
    kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    if args.runs < 1 or not kernels:
        ap.error("need at least one kernel and one run")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        images = {k: resolve_kernel(k) for k in kernels}
        from pvmon.errors import PvmonError
        from pvmon.guests.initramfs import ensure_initramfs
        try:
            initrd = str(ensure_initramfs("busybox"))
        except PvmonError as exc:
            raise BenchError(f"cannot build the busybox initramfs: {exc}") from None
        qemu = None if args.no_qemu else ensure_qemu(log)
    except BenchError as exc:
        log(f"bench_shell: error: {exc}")
        return 2
    qemu_version = None
    if qemu:
        v = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False)
        qemu_version = v.stdout.splitlines()[0] if v.stdout else None

    results = []
    for name in kernels:
        entry = {"kernel": name + (f" {args.backend}" if args.backend else ""),
                 "version": images[name].version, "pvmon": [], "qemu": []}
        for i in range(args.runs):
            log(f"{name}: pvmon run {i + 1}/{args.runs} ...")
            r = run_pvmon(name, args.timeout, args.backend)
            entry["pvmon"].append(r)
            log(f"  {r['wall_s']:.2f} s" if r["ok"] else f"  FAILED: {r['error']}")
        if qemu:
            for i in range(args.runs):
                log(f"{name}: QEMU TCG run {i + 1}/{args.runs} ...")
                r = run_qemu(qemu, str(images[name].vmlinuz), initrd, args.timeout)
                entry["qemu"].append(r)
                log(f"  {r['wall_s']:.2f} s" if r["ok"] else f"  FAILED: {r['error']}")
        entry["pvmon_median_s"] = median_of(entry["pvmon"])
        entry["qemu_median_s"] = median_of(entry["qemu"]) if qemu else None
        p, q = entry["pvmon_median_s"], entry["qemu_median_s"]
        entry["ratio"] = p / q if p is not None and q else None
        results.append(entry)

    return report(results, args.runs, qemu_version, "boot to the busybox shell prompt",
                  args.json)


if __name__ == "__main__":
    sys.exit(main())
