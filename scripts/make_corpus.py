#!/usr/bin/env python3
"""Regenerate the sample traces under traces/ (traces/README.md says what each is).

    python scripts/make_corpus.py              # everything (Debian ones need the
                                               # kernels and the busybox initramfs:
                                               # pvmon guests fetch debian-6.12 --initramfs busybox)
    python scripts/make_corpus.py --builtin    # only the built-in guests and the xentrace sample

Every trace is recorded by this tree's `pvmon run --record` (so a format or
engine change shows up as a diff of these files), one process per trace, in
order. Recording is deterministic except for the header's host and time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "traces"
#: The built-in guests recorded on every Xen version.
BUILTIN_GUESTS = ("pvtest-v1", "pvtest-v2", "pvtest-v2-rules")
#: The busybox session: a command, then power off.
BUSYBOX_SCRIPT = "uname -r\necho hello from the pvmon corpus\npoweroff -f"


def xen_versions() -> list[str]:
    """Every built-in Xen version (profiles on this machine are left out)."""
    sys.path.insert(0, str(ROOT))
    from pvmon.backends.xen.versions import REGISTRY
    return sorted(REGISTRY, key=lambda n: (REGISTRY[n].major, REGISTRY[n].minor, n))


def builtin_path(guest: str, version: str) -> Path:
    """Where the corpus keeps ``guest`` recorded on ``version``."""
    return TRACES / f"{guest}--{version}.pvt"


def pvmon(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "pvmon", *args], cwd=ROOT, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    # exit 1 is a guest that reports failures (an old Xen refusing what pvtest checks):
    # still a faithful recording
    if p.returncode not in (0, 1):
        sys.exit(f"pvmon {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--builtin", action="store_true",
                    help="only the built-in guests and the xentrace sample (seconds)")
    args = ap.parse_args()
    for version in xen_versions():
        for guest in BUILTIN_GUESTS:
            out = builtin_path(guest, version)
            out.parent.mkdir(parents=True, exist_ok=True)
            print(f"{out.relative_to(ROOT)}", flush=True)
            pvmon("run", guest, "--backend", version, "--quiet", "--record", str(out))
    xt = TRACES / "pvtest-v2--xen-4.17.xt"
    xt.parent.mkdir(parents=True, exist_ok=True)
    print(f"{xt.relative_to(ROOT)}", flush=True)
    pvmon("trace", "export", str(builtin_path("pvtest-v2", "xen-4.17")), "--format", "xentrace",
          "-o", str(xt))
    # the built-in guest's Xen PVH build (it boots as PVH by itself), on the Xen
    # versions that run PVH guests (4.10 on)
    for version in ("xen-4.11", "xen-4.17"):
        out = builtin_path("pvtest-v2-pvh", version)
        print(f"{out.relative_to(ROOT)}", flush=True)
        pvmon("run", "pvtest-v2-pvh", "--backend", version, "--quiet", "--record", str(out))
    # the KVM reference guest on the newest and the oldest KVM release (on
    # kvm-2.6.34 it takes the old kvmclock MSRs and the #GP / -KVM_ENOSYS paths)
    for version in ("kvm-2.6.34", "kvm-6.12"):
        out = builtin_path("pvtest-kvm", version)
        print(f"{out.relative_to(ROOT)}", flush=True)
        pvmon("run", "pvtest-kvm", "--backend", version, "--quiet", "--record", str(out))
    # the 32-bit reference guests of the historic ABIs: lguest on both eras (and
    # its PAE build), VMI on API 3.0
    for guest, version in (("pvtest-lguest", "lguest-4.13"), ("pvtest-lguest", "lguest-4.0"),
                           ("pvtest-lguest-pae", "lguest-4.13"), ("pvtest-vmi", "vmi-3.0")):
        out = builtin_path(guest, version)
        print(f"{out.relative_to(ROOT)}", flush=True)
        pvmon("run", guest, "--backend", version, "--quiet", "--record", str(out))
    if args.builtin:
        return
    deb = TRACES
    print("traces/debian-6.12-boot.pvt", flush=True)
    pvmon("run", "debian-6.12", "--quiet", "--record", str(deb / "debian-6.12-boot.pvt"))
    print("traces/debian-6.12-busybox.pvt", flush=True)
    pvmon("run", "debian-6.12", "--initramfs", "busybox", "--script", BUSYBOX_SCRIPT,
          "--quiet", "--record", str(deb / "debian-6.12-busybox.pvt"))
    print("traces/debian-6.12-pvh-boot.pvt", flush=True)
    pvmon("run", "debian-6.12", "--mode", "pvh", "--quiet", "--record",
          str(deb / "debian-6.12-pvh-boot.pvt"))
    print("traces/debian-6.12-kvm-boot.pvt", flush=True)
    pvmon("run", "debian-6.12", "--backend", "kvm-6.12", "--quiet", "--record",
          str(deb / "debian-6.12-kvm-boot.pvt"))


if __name__ == "__main__":
    main()
