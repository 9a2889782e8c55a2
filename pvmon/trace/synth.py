"""Synthetic but realistically shaped trace events, for tests and benchmarks.

The mix follows what a stock Linux 6.12 Xen PV boot makes (DESIGN.md): about
56% mmu_update, 38% mmuext_op (NEW_BASEPTR/NEW_USER_BASEPTR pairs, INVLPG,
pins), then event channel sends, segment bases, stack switches, console
output, faults, upcalls, CPUID and TSC reads. Deterministic for a given seed.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from typing import Any

from pvmon.trace import format as fmt

DOMID_SELF = 0x7FF0
_KERNEL_RIP = 0xFFFFFFFF81000000
_DIRECTMAP = 0xFFFF888000000000


def synthetic_header(**overrides: Any) -> dict[str, Any]:
    """A header dict as the recorder writes it (see docs/trace-format.md)."""
    header: dict[str, Any] = {
        "format": "pvmon-trace",
        "version": fmt.FORMAT_VERSION,
        "pvmon": "0.1.0",
        "guest": {"name": "debian-6.12", "package": "linux-image-6.12.0-cloud-amd64",
                  "version": "6.12.43-1", "sha256": "0" * 64},
        "backend": {"name": "xen", "version": "4.17", "profile": None},
        "machine": {"memory": 512 << 20, "vcpus": 1, "cmdline": "console=hvc0 earlyprintk=xen",
                    "cpuid_policy": {"hide": ["pse", "pse36", "mtrr", "vmx", "monitor",
                                              "rdrand"]}},
        "vtime_base_ns": 0,
        "tsc_khz": 2_000_000,
        "host": "synthetic",
        "recorded_at": "2025-01-01T00:00:00+00:00",
    }
    header.update(overrides)
    return header


def _hc(rng: random.Random, seq: int, t: int, nr: int, name: str, args: list[int],
        op: dict[str, Any], ret: int = 0, rd: list | None = None, wr: list | None = None,
        ev: list | None = None) -> dict[str, Any]:
    return {"seq": seq, "t": t, "cpu": 0, "k": "hc", "abi": "xen", "nr": nr, "name": name,
            "args": args, "op": op, "ret": ret,
            "rip": _KERNEL_RIP + rng.randrange(0, 0x200000, 16), "via": "syscall",
            "rd": rd or [], "wr": wr or [], "ev": ev or []}


def synthetic_events(n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """``n`` events with seq 0..n-1 and non-decreasing virtual time (ns)."""
    rng = random.Random(seed)
    t = 1_000_000
    mfn_base = 0x10000
    for seq in range(n):
        t += rng.randrange(200, 20_000)
        r = rng.random()
        req = _DIRECTMAP + rng.randrange(0, 1 << 30, 16)
        if r < 0.56:
            count = 1 if rng.random() < 0.8 else rng.randrange(2, 16)
            ops, rd_bytes, wr = [], b"", []
            for _ in range(count):
                ptr = (mfn_base + rng.randrange(0, 0x8000)) << 12 | rng.randrange(0, 512) * 8
                val = (mfn_base + rng.randrange(0, 0x8000)) << 12 | 0x67
                ops.append({"cmd": "NORMAL_PT_UPDATE", "ptr": ptr, "val": val})
                rd_bytes += struct.pack("<QQ", ptr, val)
                wr.append(["p", ptr, struct.pack("<Q", val)])
            yield _hc(rng, seq, t, 1, "mmu_update", [req, count, 0, DOMID_SELF],
                      {"count": count, "ops": ops}, rd=[["v", req, rd_bytes]], wr=wr)
        elif r < 0.94:
            cmd = rng.choices(["NEW_BASEPTR", "NEW_USER_BASEPTR", "INVLPG_LOCAL",
                               "TLB_FLUSH_LOCAL", "PIN_L1_TABLE", "PIN_L4_TABLE",
                               "UNPIN_TABLE"], [40, 40, 8, 4, 4, 2, 2])[0]
            arg = (mfn_base + rng.randrange(0, 0x8000)) if cmd != "INVLPG_LOCAL" else \
                _DIRECTMAP + rng.randrange(0, 1 << 30, 4096)
            key = "linear_addr" if cmd == "INVLPG_LOCAL" else "mfn"
            op = {"cmd": cmd} if cmd == "TLB_FLUSH_LOCAL" else {"cmd": cmd, key: arg}
            yield _hc(rng, seq, t, 26, "mmuext_op", [req, 1, 0, DOMID_SELF],
                      {"count": 1, "ops": [op]},
                      rd=[["v", req, struct.pack("<IIQQ", 0, 0, arg, 0)]])
        elif r < 0.955:
            port = rng.randrange(1, 8)
            yield _hc(rng, seq, t, 32, "event_channel_op", [4, req],
                      {"cmd": "send", "port": port}, rd=[["v", req, struct.pack("<I", port)]],
                      ev=[port])
        elif r < 0.965:
            yield _hc(rng, seq, t, 25, "set_segment_base", [rng.randrange(0, 3), req],
                      {"which": "SEGBASE_GS_USER", "base": req})
        elif r < 0.972:
            yield _hc(rng, seq, t, 3, "stack_switch", [0x10, req], {"ss": 0x10, "esp": req})
        elif r < 0.978:
            text = rng.choice([b"[    0.000000] Linux version 6.12.43\n",
                               b"[    0.120000] Memory: 480000K available\n",
                               b"[    0.310000] xen: PV spinlocks enabled\n"])
            yield _hc(rng, seq, t, 18, "console_io", [0, len(text), req],
                      {"cmd": "CONSOLEIO_write", "count": len(text)},
                      rd=[["v", req, text]])
        elif r < 0.982:
            yield {"seq": seq, "t": t, "cpu": 0, "k": "con", "dir": "out", "ch": "io",
                   "data": b"[    0.200000] smp: Bringing up secondary CPUs ...\n"}
        elif r < 0.986:
            vec = rng.choice([14, 14, 14, 6, 3])
            ev = {"seq": seq, "t": t, "cpu": 0, "k": "fault", "vec": vec,
                  "err": 2 if vec == 14 else 0, "rip": _KERNEL_RIP + rng.randrange(0, 1 << 21),
                  "cs": 0xE033}
            if vec == 14:
                ev["cr2"] = _DIRECTMAP + rng.randrange(0, 1 << 30)
            yield ev
        elif r < 0.99:
            yield {"seq": seq, "t": t, "cpu": 0, "k": "upcall",
                   "rip": _KERNEL_RIP + rng.randrange(0, 1 << 21), "ports": [rng.randrange(1, 8)]}
        elif r < 0.993:
            yield {"seq": seq, "t": t, "cpu": 0, "k": "cpuid",
                   "rip": _KERNEL_RIP + rng.randrange(0, 1 << 21), "leaf": 0x40000000 + rng.randrange(4),
                   "sub": 0, "out": [0x40000004, 0x566E6558, 0x65584D4D, 0x4D4D566E]}
        elif r < 0.997:
            n = rng.randrange(1, 200)
            rip = _KERNEL_RIP + rng.randrange(0, 1 << 21)
            yield {"k": "tsc_run", "rip": [rip] * n, "val": [t * 2 + 37 * i for i in range(n)],
                   "seq": seq, "t": t, "cpu": 0}
        else:
            yield _hc(rng, seq, t, 29, "sched_op", [1, 0], {"cmd": "SCHEDOP_yield"},
                      ret=0)
