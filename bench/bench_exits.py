"""What a guest exit costs on pvmon's HVM platform, and what that makes per boot.

Issue 18 asks for interrupt delivery and MMIO costs "measured and reported
per boot". Two parts, both on the real engine and the real KVM dispatch:

1. Per exit (in-process, labelled so): a few instructions of x86-64 in a loop
   of N iterations on a bare KVM platform (no kernel; the harness of
   tests/test_kvm_platform.py): a RAM read (the baseline), an xAPIC MMIO
   read (the APIC ID register) and write (EOI), a port read (the UART's LSR),
   an RDMSR of a KVM MSR, a CPUID of KVM's leaf, and a self-IPI through the
   ICR taken through the guest IDT by a handler that writes EOI and returns
   (iretq). Each loop's wall time less the baseline's, divided by N, is the
   cost of one exit of that kind; the interrupt's is the self-IPI iteration
   less its two MMIO writes. With and without recording (events to a real
   trace writer).
2. Per boot (whole command): ``pvmon run GUEST --backend kvm-6.12`` prints
   its exits by kind; counts x costs per exit give the time a boot spends in
   MMIO, interrupts, port I/O and MSRs, beside the whole command's time.

Run: python bench/bench_exits.py [GUEST ...] [--n 200000] [--backend kvm-6.12] [--shell]
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

from pvmon.backends.kvm.backend import KvmBackend
from pvmon.backends.kvm.versions import REGISTRY
from pvmon.dispatch.access import RecordingGuestAccess
from pvmon.dispatch.kvm import KvmDispatch
from pvmon.engine.machine import Machine
from pvmon.trace import format as fmt
from pvmon.trace.writer import TraceWriter

MiB = 1 << 20
LAPIC = 0xFEE00000
VECTOR = 0xEC
HANDLER = 0x2000


def _store(addr: int, value: int) -> bytes:
    """mov eax, value; mov [addr64], eax"""
    return b"\xB8" + struct.pack("<I", value) + b"\xA3" + struct.pack("<Q", addr)


def _loop(body: bytes, n: int, prologue: bytes = b"") -> bytes:
    """prologue; r8d = n; 1: body; dec r8d; jnz 1b; cli"""
    tail = b"\x41\xFF\xC8"                               # dec r8d
    rel = -(len(body) + len(tail) + 2)
    return (prologue + b"\x41\xB8" + struct.pack("<I", n) + body + tail
            + b"\x75" + struct.pack("<b", rel) + b"\xFA")


BODIES = {
    "ram read": b"\x8B\x04\x25\x00\x50\x00\x00",                        # mov eax, [0x5000]
    "MMIO read (xAPIC ID)": b"\xA1" + struct.pack("<Q", LAPIC + 0x20),   # mov eax, [moffs64]
    "MMIO write (xAPIC EOI)": b"\xA3" + struct.pack("<Q", LAPIC + 0xB0),  # mov [moffs64], eax
    "port read (UART LSR)": b"\xEC",                                    # in al, dx
    "RDMSR (MSR_KVM_POLL_CONTROL)": b"\xB9\x05\x4D\x56\x4B\x0F\x32",     # mov ecx, ..; rdmsr
    "CPUID (0x40000000)": b"\xB8\x00\x00\x00\x40\x0F\xA2",              # mov eax, ..; cpuid
    "self-IPI + EOI + iretq": _store(LAPIC + 0x300, (1 << 18) | VECTOR),  # ICR: self, fixed
}
PROLOGUE = (b"\x6A\x08\x68" + struct.pack("<I", 0x1009) + b"\x48\xCB"     # load CS 0x08
            + _store(LAPIC + 0xF0, 0x1FF)                                # SVR: APIC enabled
            + b"\x66\xBA\xFD\x03\xFB")                                   # dx = 0x3FD; sti


def _machine(code: bytes, record):
    # (unicorn after pvmon.engine, which selects the patched library)
    from unicorn.x86_const import UC_X86_REG_IDTR, UC_X86_REG_RFLAGS, UC_X86_REG_RSP
    m = Machine(64 * MiB)
    b = KvmBackend(REGISTRY["kvm-6.12"])
    acc = RecordingGuestAccess(m, record=record is not None)
    d = KvmDispatch(m, b, acc, record)
    b.attach(m, None, acc, d, 64 * MiB, "bench")
    m.attach(d)
    m.write_phys(0x10000, struct.pack("<Q", 0x11000 | 3))
    m.write_phys(0x11000, b"".join(struct.pack("<Q", (0x12000 + 0x1000 * g) | 3)
                                   for g in range(4)))
    m.write_phys(0x12000, b"".join(struct.pack("<Q", (i << 21) | 0x83) for i in range(2048)))
    m.write_phys(0x20000, struct.pack("<QQ", 0, 0x00AF9B000000FFFF))
    m.setup_long_mode(0x10000, 0x20000, 15)
    m.uc.reg_write(UC_X86_REG_RSP, 0x8000)
    gate = struct.pack("<HHBBHII", HANDLER & 0xFFFF, 0x08, 0, 0x8E, HANDLER >> 16, 0, 0)
    m.write_phys(0x30000 + 16 * VECTOR, gate)
    m.uc.reg_write(UC_X86_REG_IDTR, (0, 0x30000, 0xFFF, 0))
    m.write_phys(HANDLER, _store(LAPIC + 0xB0, 0) + b"\x48\xCF")         # EOI; iretq
    m.write_phys(0x1000, code + b"\xF4")                                 # ... hlt (IF=0)
    m.set_reg("rip", 0x1000)
    m.uc.reg_write(UC_X86_REG_RFLAGS, 2)
    return m, d


def time_loop(body: bytes, n: int, record: bool) -> float:
    """Wall seconds of the machine's run of ``n`` iterations of ``body``."""
    with tempfile.TemporaryDirectory() as td:
        writer = None
        if record:
            writer = TraceWriter(os.path.join(td, "loop.pvt"),
                                 {"format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION})
        m, d = _machine(_loop(body, n, PROLOGUE), writer.append if writer else None)
        if writer is not None:      # as a recording Session wires it (pvmon/session.py)
            d.record_hc, d.record_ev = writer.append_hc, writer.append_ev
        t0 = time.perf_counter()
        stop = m.run()
        t = time.perf_counter() - t0
        if writer is not None:
            d.flush_tsc()
            writer.close()
    if stop.kind != "shutdown":
        raise SystemExit(f"loop did not finish: {stop}")
    return t


def per_exit(n: int, runs: int, record: bool) -> dict[str, float]:
    """Cost of one exit of each kind, µs (median of ``runs``), baseline removed."""
    med = {}
    for name, body in BODIES.items():
        ts = sorted(time_loop(body, n, record) for _ in range(runs))
        med[name] = ts[len(ts) // 2]
    base = med["ram read"]
    out = {name: (t - base) / n * 1e6 for name, t in med.items() if name != "ram read"}
    out["interrupt delivery (per self-IPI, its 2 MMIO writes removed)"] = (
        out["self-IPI + EOI + iretq"] - 2 * out["MMIO write (xAPIC EOI)"])
    out["_baseline_ns_per_iteration"] = base / n * 1e9
    return out


def boot_exits(guest: str, backend: str, record: bool,
               shell: bool) -> tuple[float, dict[str, int]]:
    """Whole ``pvmon run`` wall seconds and its printed exits by kind; ``shell``:
    with the busybox initramfs, to the shell, ``poweroff -f`` typed there."""
    cmd = [sys.executable, "-m", "pvmon", "run", guest, "--backend", backend]
    if shell:
        cmd += ["--initramfs", "busybox", "--script", "poweroff -f"]
    with tempfile.TemporaryDirectory() as td:
        if record:
            cmd += ["--record", os.path.join(td, "b.pvt")]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        t = time.perf_counter() - t0
    out = p.stdout + p.stderr
    text = " ".join(out[out.find("guest exits:"):].split())      # the summary line, unwrapped
    exits = {k: int(v.replace(",", "")) for k, v in
             re.findall(r"(cpuid|msr|port I/O|MMIO|open bus|interrupts|PV EOIs|halts|"
                        r"hypercalls) ([\d,]+)", text)}
    return t, exits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("guests", nargs="*", default=["debian-6.12"])
    ap.add_argument("--backend", default="kvm-6.12")
    ap.add_argument("--n", type=int, default=200_000, help="iterations per loop")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shell", action="store_true",
                    help="boot to the busybox shell and power off (default: to the VFS panic)")
    args = ap.parse_args()
    print(f"per exit, in-process (real engine, KVM dispatch, {args.n:,} iterations, "
          f"median of {args.runs}; load {os.getloadavg()[0]:.1f}):")
    costs = {}
    for record in (False, True):
        c = per_exit(args.n, args.runs, record)
        costs[record] = c
        base = c.pop("_baseline_ns_per_iteration")
        print(f"  {'recording' if record else 'not recording'} "
              f"(baseline loop iteration {base:.0f} ns):")
        for name, us in c.items():
            print(f"    {name:<62} {us:7.2f} µs")
    kinds = {"MMIO": "MMIO read (xAPIC ID)", "interrupts":
             "interrupt delivery (per self-IPI, its 2 MMIO writes removed)",
             "port I/O": "port read (UART LSR)", "msr": "RDMSR (MSR_KVM_POLL_CONTROL)",
             "cpuid": "CPUID (0x40000000)"}
    for guest in args.guests:
        for record in (False, True):
            t, exits = boot_exits(guest, args.backend, record, args.shell)
            c = costs[record]
            what = " to the busybox shell" if args.shell else " to the VFS panic"
            print(f"\n{guest}{what} on {args.backend}{' --record' if record else ''}: "
                  f"whole command "
                  f"{t:.2f} s")
            total = 0.0
            for kind, cost_name in kinds.items():
                cnt = exits.get(kind, 0)
                ms = cnt * c[cost_name] / 1000
                total += ms
                print(f"  {kind:<11} {cnt:>9,} exits x {c[cost_name]:6.2f} µs = {ms:7.1f} ms"
                      f"  ({ms / 10 / t:4.1f} % of the command)")
            print(f"  {'together':<11} {'':>9}                     = {total:7.1f} ms"
                  f"  ({total / 10 / t:4.1f} %)")


if __name__ == "__main__":
    main()
