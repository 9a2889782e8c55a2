#!/usr/bin/env python3
"""Real Xen as an oracle: run pvmon's built-in reference guests under Debian's
Xen 4.17 (as dom0, on QEMU TCG) and under pvmon, and compare check by check.

    python scripts/xen_oracle.py                      # all four guests
    python scripts/xen_oracle.py pvtest-v2 --timeout 300 --json
    python scripts/xen_oracle.py --tcg-build          # pvtest-v2-rules past TCG's gaps
    python scripts/xen_oracle.py --tcg-build --cpu max   # QEMU's own max CPU (AMD vendor)

Needs `qemu-system-x86_64` (Debian: `apt-get install qemu-system-x86`) and the
package `xen-hypervisor-4.17-amd64`, which the script fetches with
`apt-get download` into its cache dir (default ~/.cache/pvmon-oracle) and
unpacks there with dpkg-deb; nothing is installed. QEMU runs one guest at a
time:

    qemu-system-x86_64 -accel tcg -cpu max,vendor=GenuineIntel,-svm,-smap -m 1024 -display none -no-reboot
        -serial file:LOG -kernel xen -append "console=com1 ..." -initrd GUEST

The guests print TAP-like lines (`pvtest: ok N - name`, `pvtest: ok N - name
# SKIP why`, `pvtest: FAIL N - name (detail)`; the proof-of-concept guest
`pvtest: XSA-N fixed|vulnerable|unexpected - ...`). Under real Xen dom0's
console_io writes reach com1 (a release build prints them bare; a debug build
or a domU's would carry a `(d0)`-style prefix, which the parser strips). A run
that neither finishes nor crashes within --timeout wall seconds is reported
"stalled after check N". Findings: docs/xen-oracle.md.

Exit status: 0 every check agrees, 1 some differ (or a run stalled or
crashed), 2 an error (QEMU or the Xen package missing, an unknown guest).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

GUESTS = ("pvtest-v1", "pvtest-v2", "pvtest-v2-rules", "pvtest-v2-poc")
#: PVH reference guests: real Xen boots them as a PVH dom0 (dom0=pvh), which needs
#: HVM (SVM on QEMU's AMD max CPU) and an IOMMU (QEMU's intel-iommu on q35).
#: Only their --tcg-build image makes hypercalls Xen takes on AMD (VMMCALL).
PVH_GUESTS = ("pvtest-v2-pvh",)
#: QEMU's -cpu for a PVH dom0: SVM and an AMD vendor (--cpu is for PV guests).
PVH_CPU = "max"
#: QEMU's machine options for a PVH dom0 (Xen refuses one without an IOMMU).
PVH_MACHINE = ["-machine", "q35,kernel-irqchip=split", "-device", "intel-iommu,intremap=on"]
XEN_PACKAGE = "xen-hypervisor-4.17-amd64"
#: Xen's command line. `cpuid=no-rdtscp,no-rdpid` takes RDTSCP and RDPID out of
#: Xen's CPUID policies as pvmon's PV policy has neither (pvmon/backends/xen/cpuid.py),
#: while the CPU still runs RDTSCP natively, as under pvmon: with CR4.TSD Xen's
#: emulated RDTSCP then reads MSR_TSC_AUX against the same policy (difference 16).
XEN_CMDLINE = ("console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all "
               "dom0_mem=256M dom0=pv cpuid=no-rdtscp,no-rdpid")
QEMU = "qemu-system-x86_64"
IMAGES = Path(__file__).resolve().parent.parent / "pvmon" / "guests" / "images"

#: A check line, anywhere in a console line (prefixes such as "(XEN) ", "(d0) " or
#: "[timestamp] " are ignored). Groups: status word, number, name, rest.
CHECK_RE = re.compile(r"pvtest: (ok|FAIL|not ok) (\d+) - (.*)$")
#: A proof-of-concept verdict: "pvtest: XSA-148 fixed - what -> got".
XSA_RE = re.compile(r"pvtest: (XSA-\d+) (fixed|vulnerable|unexpected) - (.*)$")
#: The guest's own last words before SCHEDOP_shutdown.
END_RE = re.compile(r"pvtest: shutting down: (\w+)")
#: Hypervisor lines that end a real-Xen run early.
CRASH_RE = re.compile(r"Panic on CPU|Domain 0 crashed|Hardware Dom0 crashed|"
                      r"FATAL TRAP|Xen BUG at|Domain 0 shutdown: rebooting")


class OracleError(Exception):
    """A setup problem the user can fix (missing QEMU, Xen package, guest): one line."""


@dataclasses.dataclass
class Check:
    """One check as a console reported it."""

    key: str            # "85" or "XSA-148"
    status: str         # "ok", "skip", "fail", or for XSA steps "fixed"/"vulnerable"/"unexpected"
    name: str           # the check's description (without "# SKIP" or the failure detail)
    detail: str = ""    # the SKIP reason, the FAIL detail, or the XSA step's "-> got"


@dataclasses.dataclass
class Run:
    """What one console showed: the checks in order and how the run ended."""

    checks: dict[str, Check]
    end: str            # "poweroff", "crash", "stalled", "xen-crash", "exited", "no output"
    last: str | None    # key of the last check seen
    booted: bool        # the guest printed its banner
    seconds: float | None = None   # wall seconds of the run; None for a reused log

    def describe(self) -> str:
        """A short phrase for the summary: "finished (poweroff)", "stalled after check 85"."""
        after = f" after check {self.last}" if self.last else " before any check"
        if self.end in ("poweroff", "crash"):
            return f"finished ({self.end})"
        if self.end == "no output":
            return "no guest output"
        if self.end == "xen-crash":
            return "Xen crashed the guest" + after
        if self.end == "exited":
            return "machine stopped" + after
        return "stalled" + after


def _split_detail(rest: str) -> tuple[str, str]:
    """Split "name (detail)" at the parenthesis that closes at the end of the line
    (the detail may hold parentheses itself: "(vector 13, ... (int at 0x..))")."""
    depth = 0
    for i in range(len(rest) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(rest[i], 0)
        if depth == 0:
            if i > 0 and rest[i - 1] == " ":
                return rest[:i - 1], rest[i + 1:-1]
            break
    return rest, ""


def parse_console(text: str, *, finished: bool | None = None) -> Run:
    """Parse a guest console (pvmon's stdout or Xen's com1 log) into a Run.

    text: the whole console, possibly ending in an unterminated line (a stalled
    guest). finished: None to infer the end from the text alone ("stalled" if
    the guest did not say it was shutting down); a caller that knows the
    process exited passes False for "exited" instead of "stalled".
    """
    checks: dict[str, Check] = {}
    end = ""
    booted = False
    crashed = False
    for line in text.splitlines():
        line = line.rstrip("\r")
        if "pvtest: " in line and " booting" in line:
            booted = True
        if m := CHECK_RE.search(line):
            word, num, rest = m.groups()
            status = "fail" if word != "ok" else "ok"
            name, detail = rest, ""
            if status == "ok" and " # SKIP" in rest:
                name, _, detail = rest.partition(" # SKIP")
                status, detail = "skip", detail.strip()
            elif status == "fail" and rest.endswith(")"):
                name, detail = _split_detail(rest)
            checks[num] = Check(num, status, name.strip(), detail)
        elif m := XSA_RE.search(line):
            key, verdict, rest = m.groups()
            name, _, got = rest.partition(" -> ")
            checks[key] = Check(key, verdict, name.strip(), got.strip())
        elif m := END_RE.search(line):
            end = m.group(1)
        elif CRASH_RE.search(line):
            crashed = True
    if not end:
        if crashed:
            end = "xen-crash"
        elif not booted and not checks:
            end = "no output"
        else:
            end = "exited" if finished is False else "stalled"
    last = next(reversed(checks), None) if checks else None
    return Run(checks, end, last, booted)


# --- setup -------------------------------------------------------------------------


def ensure_xen(cache: Path) -> tuple[Path, str]:
    """The gunzipped Xen 4.17 multiboot ELF in cache, fetched if missing.

    Returns (path, Debian package version). Raises OracleError with one line when
    apt-get or dpkg-deb is missing or the download fails.
    """
    cache.mkdir(parents=True, exist_ok=True)
    xen = cache / "xen-4.17-amd64"
    version_file = cache / "xen-4.17-amd64.version"
    if xen.is_file() and version_file.is_file():
        return xen, version_file.read_text().strip()
    debs = sorted(cache.glob(f"{XEN_PACKAGE}_*.deb"))
    if not debs:
        if not shutil.which("apt-get"):
            raise OracleError(f"{XEN_PACKAGE} is not in {cache} and apt-get is not available "
                              "to download it")
        r = subprocess.run(["apt-get", "download", XEN_PACKAGE], cwd=cache,
                           check=False, capture_output=True, text=True)
        debs = sorted(cache.glob(f"{XEN_PACKAGE}_*.deb"))
        if r.returncode != 0 or not debs:
            why = (r.stderr.strip().splitlines() or ["no .deb appeared"])[-1]
            raise OracleError(f"cannot download {XEN_PACKAGE} with apt-get: {why}")
    deb = debs[-1]
    if not shutil.which("dpkg-deb"):
        raise OracleError(f"dpkg-deb is needed to unpack {deb.name}")
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                             text=True, check=False).stdout.strip()
    tree = cache / "pkg"
    r = subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=False,
                       capture_output=True, text=True)
    gz = tree / "boot" / "xen-4.17-amd64.gz"
    if r.returncode != 0 or not gz.is_file():
        raise OracleError(f"{deb.name} holds no boot/xen-4.17-amd64.gz")
    with gzip.open(gz, "rb") as src, open(xen, "wb") as dst:
        shutil.copyfileobj(src, dst)
    version_file.write_text(version + "\n")
    return xen, version


#: QEMU's -cpu for real Xen. TCG's "max" has an AMD vendor, on which SYSENTER in
#: long mode is #UD, where pvmon's CPUID says GenuineIntel; with the Intel vendor
#: Xen would still see SVM and start it, and `svm_load_segs`' VMLOAD on every PV
#: context switch restores the SYSENTER_ESP `_svm_cpu_up` VMSAVEd from the boot
#: stack, so Xen double-faults at the first sysenter (docs/xen-oracle.md, 22).
#: Without SMAP, QEMU 7.2's supervisor-mode pops of a kernel IRETQ/LRETQ frame do
#: not fault on the PV kernel's user-mode stack (difference 24); a PV guest never
#: sees the host's SMAP (Xen's PV CPUID policy does not offer it).
DEFAULT_CPU = "max,vendor=GenuineIntel,-svm,-smap"


def qemu_version() -> str:
    """QEMU's first --version line, or OracleError if QEMU is not installed."""
    if not shutil.which(QEMU):
        raise OracleError(f"{QEMU} not found (Debian: apt-get install qemu-system-x86)")
    out = subprocess.run([QEMU, "--version"], check=False, capture_output=True, text=True).stdout
    return out.splitlines()[0].strip() if out else QEMU


#: The define the oracle-only build of pvtest-v2-rules is compiled with
#: (guests/src/checks_rules.c, checks_grants.c; docs/xen-oracle.md, differences
#: 6, 7 and 20): it works around QEMU TCG's `int $n` error code so that real Xen
#: on TCG runs on past it, and lets dom0 stand in for the domU the rules guest
#: expects (its domain id; the grant it maps to itself is unmapped again).
#: Without it the sources compile to the committed image.
TCG_DEFINE = "PVTEST_ORACLE_TCG"
#: make variables of each guest the TCG build rebuilds (guests/Makefile). In the
#: PVH guest the define picks VMMCALL on an AMD CPU and adds two mmuext_op checks.
TCG_BUILD = {"pvtest-v2-rules": ["VARIANT=2", "RULES=1"],
             "pvtest-v2-pvh": ["VARIANT=2", "PVH=1"]}


def build_tcg(cache: Path) -> Path:
    """Build the TCG_BUILD guests from this tree's guests/ with -DPVTEST_ORACLE_TCG=1
    into cache/tcg-build/ (objects there too; guests/ and the committed images are
    not touched). Returns that directory. OracleError if make fails (the guests'
    toolchain: gcc, binutils; CC may name another compiler)."""
    src = IMAGES.parent.parent.parent / "guests"
    out = cache / "tcg-build"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cc = f"{os.environ.get('CC', 'gcc')} -D{TCG_DEFINE}=1"
    for flags in TCG_BUILD.values():
        r = subprocess.run(["make", "-s", "-C", str(src), f"OUT={out}", f"CC={cc}", *flags],
                           check=False, capture_output=True, text=True)
        if r.returncode != 0:
            why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
            raise OracleError(f"building the TCG oracle guest failed: {why}")
    return out


# --- runs --------------------------------------------------------------------------


def run_real_xen(xen: Path, guest: Path, log: Path, timeout: float, quiet: float,
                 cpu: str | None = None, pvh: bool = False) -> Run:
    """Boot guest as dom0 of real Xen on QEMU TCG (QEMU's -cpu cpu; a PVH dom0 on
    PVH_CPU and PVH_MACHINE); stop at the guest's shutdown, a crash, QEMU's exit,
    timeout wall seconds in all, or quiet wall seconds without new console output
    once the guest has booted. The com1 log is kept at log."""
    log.unlink(missing_ok=True)
    cmdline = XEN_CMDLINE.replace("dom0=pv", "dom0=pvh") if pvh else XEN_CMDLINE
    cmd = [QEMU, "-accel", "tcg", "-cpu", PVH_CPU if pvh else (cpu or DEFAULT_CPU),
           *(PVH_MACHINE if pvh else []), "-m", "1024", "-display", "none",
           "-no-reboot", "-serial", f"file:{log}", "-monitor", "none", "-nodefaults",
           "-kernel", str(xen), "-append", cmdline, "-initrd", str(guest)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    done_at = None
    size, grew_at = -1, start
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            now = time.monotonic()
            text = log.read_text(errors="replace") if log.exists() else ""
            if len(text) != size:
                size, grew_at = len(text), now
            if done_at is None and (END_RE.search(text) or CRASH_RE.search(text)):
                done_at = now          # give Xen a moment to print its own end
            if (done_at is not None and now - done_at > 3) or now - start > timeout:
                break
            if "pvtest: " in text and now - grew_at > quiet:
                break
    finally:
        exited = proc.poll() is not None
        if not exited:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    text = log.read_text(errors="replace") if log.exists() else ""
    if exited and proc.returncode != 0 and not text:
        raise OracleError(f"{QEMU} failed: {err.splitlines()[0] if err else proc.returncode}")
    run = parse_console(text, finished=False if exited else None)
    run.seconds = time.monotonic() - start
    return run


def log_name(guest: str, images: Path | None, cpu: str | None = None) -> str:
    """File name of the com1 log of one real-Xen run in the cache's logs/: the guest,
    then the image dir's name (--images, --tcg-build) and QEMU's -cpu unless it is
    the default (punctuation as "_"), so runs of other images or CPUs keep
    their own logs for --reuse-logs."""
    tag = f"-{images.name}" if images else ""
    if cpu and cpu != DEFAULT_CPU:
        tag += "-" + re.sub(r"[^A-Za-z0-9]+", "_", cpu)
    return f"{guest}{tag}.log"


def run_pvmon(name: str, backend: str, timeout: float, pvh: bool = False) -> Run:
    """Run the guest under pvmon (this tree's, `python -m pvmon run NAME`, with
    `--mode pvh` for a PVH guest; NAME may be a path to an ELF image) and parse its
    console (stdout)."""
    env = dict(os.environ)
    root = str(IMAGES.parent.parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    start = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "pvmon", "run", name, "--backend", backend,
                            "--timeout", str(int(timeout)), *(["--mode", "pvh"] if pvh else [])],
                           check=False,
                           capture_output=True, text=True,
                           env=env, timeout=timeout + 30, stdin=subprocess.DEVNULL)
        out, code = r.stdout, r.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        code = None
    if code == 2:
        raise OracleError(f"pvmon run {name}: {(r.stderr.strip().splitlines() or ['error'])[-1]}")
    run = parse_console(out, finished=False if code is not None else None)
    run.seconds = time.monotonic() - start
    return run


# --- comparison --------------------------------------------------------------------


def align(pvmon: Run, xen: Run) -> list[tuple[str | None, str | None]]:
    """Pair the two runs' checks by name, in order (difflib's longest matching
    blocks), so a section one side skips (dom0 has no xenstore, so the grant checks
    do not run) does not shift every later check against the wrong one. A stretch
    that differs in name on both sides is paired in order when both have as many
    checks there (a check whose text changed) or it ends either run (a "fatal:"
    line in place of the check that crashed; the rest only one side ran). Returns
    (pvmon key or None, Xen key or None) pairs in console order."""
    pk, xk = list(pvmon.checks), list(xen.checks)
    sm = difflib.SequenceMatcher(None, [pvmon.checks[k].name for k in pk],
                                 [xen.checks[k].name for k in xk], autojunk=False)
    pairs: list[tuple[str | None, str | None]] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        n = min(i2 - i1, j2 - j1)
        if tag == "replace" and (i2 - i1 == j2 - j1 or i2 == len(pk) or j2 == len(xk)):
            pairs += zip(pk[i1:i1 + n], xk[j1:j1 + n])
            i1, j1 = i1 + n, j1 + n
        elif tag == "equal":
            pairs += zip(pk[i1:i2], xk[j1:j2])
            continue
        pairs += [(k, None) for k in pk[i1:i2]] + [(None, k) for k in xk[j1:j2]]
    return pairs


def compare(pvmon: Run, xen: Run) -> list[dict]:
    """One row per check either side reported, paired by align().

    Each row: check (pvmon's key, or real Xen's for a check only it ran), xen_check
    (real Xen's key, "-" if it never ran it), name, pvmon and xen status ("-" when
    not reached), agree (bool; None when only one side ran it), and a note when the
    paired names differ.
    """
    rows = []
    for pk, xk in align(pvmon, xen):
        p = pvmon.checks[pk] if pk else None
        x = xen.checks[xk] if xk else None
        row = {"check": pk or xk, "xen_check": xk or "-", "name": (p or x).name,
               "pvmon": p.status if p else "-", "xen": x.status if x else "-",
               "pvmon_detail": p.detail if p else "", "xen_detail": x.detail if x else ""}
        if p and x:
            row["agree"] = p.status == x.status and p.name == x.name
            if p.name != x.name:
                row["note"] = f"names differ: real Xen ran {x.name!r}"
        else:
            row["agree"] = None
        rows.append(row)
    return rows


def summary(name: str, pvmon: Run, xen: Run, rows: list[dict]) -> dict:
    """The per-guest summary (also the JSON shape)."""
    both = [r for r in rows if r["agree"] is not None]
    return {
        "guest": name,
        "pvmon": pvmon.describe(), "xen": xen.describe(),
        "pvmon_seconds": None if pvmon.seconds is None else round(pvmon.seconds, 1),
        "xen_seconds": None if xen.seconds is None else round(xen.seconds, 1),
        "checks_pvmon": len(pvmon.checks), "checks_xen": len(xen.checks),
        "compared": len(both), "agree": sum(1 for r in both if r["agree"]),
        "differ": [r["check"] for r in both if not r["agree"]],
        "not_reached": [r["check"] for r in rows if r["agree"] is None],
        "xen_only": [r["xen_check"] for r in rows if r["pvmon"] == "-"],
        "rows": rows,
    }


def _ranges(keys: list[str]) -> list[str]:
    """Collapse check numbers into runs: ["5", "6", "7", "9"] -> ["5-7", "9"]."""
    out: list[str] = []
    nums = [k for k in keys if k.isdigit()]
    for k in nums:
        if out and int(k) == int(out[-1].rsplit("-", 1)[-1]) + 1:
            out[-1] = out[-1].split("-")[0] + "-" + k
        else:
            out.append(k)
    return out + [k for k in keys if not k.isdigit()]


def print_report(results: list[dict], meta: dict, show_all: bool) -> None:
    """Rich tables: one per guest (only differing rows unless show_all), then a summary."""
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False)
    con.print(f"real Xen: {meta['xen_package']} {meta['xen_version']} on {meta['qemu']} "
              f"(TCG, -cpu {meta['cpu']}); guests from {meta['images']}")
    for res in results:
        t = Table(title=f"{res['guest']}: pvmon {res['pvmon']}, real Xen {res['xen']}",
                  title_justify="left")
        for col in ("check", "name", "pvmon", "real Xen", "agree?"):
            t.add_column(col, overflow="fold")
        for r in res["rows"]:
            if not show_all and r["agree"] is not False:
                continue
            agree = {True: "yes", False: "NO", None: "not reached"}[r["agree"]]
            why = not r["agree"]
            pv = r["pvmon"] + (f" ({r['pvmon_detail']})" if r["pvmon_detail"] and why else "")
            xe = r["xen"] + (f" ({r['xen_detail']})" if r["xen_detail"] and why else "")
            ck = r["check"]
            if r["xen_check"] not in ("-", ck):
                ck += f" (Xen {r['xen_check']})"
            t.add_row(ck, r["name"] + (f" [{r['note']}]" if r.get("note") else ""),
                      pv, xe, agree)
        if not show_all:
            gone = res["not_reached"]
            t.caption = (f"{res['agree']} agreeing rows not shown"
                         + (f"; {len(gone)} checks only one side ran "
                            f"({', '.join(_ranges(gone))})" if gone else "")
                         + " (--all lists them)")
        con.print(t)
    s = Table(title="summary", title_justify="left")
    for col in ("guest", "pvmon", "real Xen", "compared", "agree", "differ", "not reached"):
        s.add_column(col)
    for res in results:
        took = "log reused" if res["xen_seconds"] is None else f"{res['xen_seconds']} s"
        s.add_row(res["guest"], res["pvmon"], f"{res['xen']} ({took})",
                  str(res["compared"]), str(res["agree"]),
                  ", ".join(res["differ"]) or "-", str(len(res["not_reached"])))
    con.print(s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("guests", nargs="*", metavar="GUEST",
                    help=f"reference guests to run (default: {' '.join(GUESTS)}; with "
                         f"--tcg-build {' '.join(TCG_BUILD)}; {' '.join(PVH_GUESTS)} runs "
                         "under real Xen only as built by --tcg-build)")
    ap.add_argument("--timeout", type=float, default=240.0,
                    help="wall seconds per guest under real Xen before it counts as stalled "
                         "(default 240; Xen's own boot on TCG takes about a minute)")
    ap.add_argument("--quiet-stall", type=float, default=45.0, metavar="SECONDS",
                    help="once the guest has booted, wall seconds without new console "
                         "output after which a real-Xen run counts as stalled (default 45)")
    ap.add_argument("--backend", default="xen-4.17", help="pvmon backend (default xen-4.17)")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "pvmon-oracle",
                    help="where the Xen package, the unpacked Xen and the com1 logs live")
    ap.add_argument("--reuse-logs", action="store_true",
                    help="parse the com1 logs a previous run left in the cache instead of "
                         "booting QEMU again")
    ap.add_argument("--images", type=Path, metavar="DIR",
                    help="take GUEST.elf from DIR instead of the built-in images (both sides "
                         "run the same file; for rebuilt or patched guests)")
    ap.add_argument("--tcg-build", action="store_true",
                    help="build pvtest-v2-rules with -DPVTEST_ORACLE_TCG=1 (trap-table aliases "
                         "for QEMU's int $n error code, dom0 standing in for a domU; "
                         "docs/xen-oracle.md) and run that on both sides")
    ap.add_argument("--cpu", default=DEFAULT_CPU, metavar="MODEL",
                    help=f"QEMU's -cpu for real Xen (default {DEFAULT_CPU}: an Intel vendor "
                         "as pvmon's CPUID, no SVM, whose VMLOAD would restore a stale "
                         "SYSENTER_ESP, and no SMAP, which QEMU's IRETQ pops trip; plain "
                         "max is AMD; docs/xen-oracle.md differences 22, 24)")
    ap.add_argument("--all", action="store_true", help="list agreeing checks too")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    try:
        for g in args.guests:
            if g not in GUESTS + PVH_GUESTS:
                raise OracleError(f"unknown reference guest {g!r} "
                                  f"(choose from {', '.join(GUESTS + PVH_GUESTS)})")
        guests = args.guests or list(TCG_BUILD if args.tcg_build else GUESTS)
        qemu = qemu_version()
        xen, xen_version = ensure_xen(args.cache)
        if args.tcg_build:
            if args.images:
                raise OracleError("--tcg-build builds its own image; drop --images")
            args.images = build_tcg(args.cache)
            guests = [g for g in guests if g in TCG_BUILD]
            if not guests:
                raise OracleError(f"--tcg-build builds only {', '.join(TCG_BUILD)}")
        logs = args.cache / "logs"
        logs.mkdir(exist_ok=True)
        results = []
        for g in guests:
            image = (args.images or IMAGES) / f"{g}.elf"
            if not image.is_file():
                raise OracleError(f"guest image {image} is missing (guests/build.sh builds it)")
            pvh = g in PVH_GUESTS
            print(f"{g}: pvmon ...", file=sys.stderr, flush=True)
            pv = run_pvmon(str(image) if args.images else g, args.backend, args.timeout, pvh)
            log = logs / log_name(g, args.images, None if pvh else args.cpu)
            if args.reuse_logs and log.exists():
                xr = parse_console(log.read_text(errors="replace"))
            else:
                print(f"{g}: real Xen on QEMU TCG (up to {args.timeout:.0f} s) ...",
                      file=sys.stderr, flush=True)
                xr = run_real_xen(xen, image, log, args.timeout, args.quiet_stall, args.cpu, pvh)
            res = summary(g, pv, xr, compare(pv, xr))
            res["xen_log"] = str(log)
            results.append(res)
    except OracleError as e:
        print(f"xen_oracle: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xen_oracle: interrupted", file=sys.stderr)
        return 130
    meta = {"images": str(args.images or IMAGES), "xen_package": XEN_PACKAGE,
            "xen_version": xen_version, "qemu": qemu, "cpu": args.cpu,
            "backend": args.backend, "date": time.strftime("%Y-%m-%d", time.gmtime())}
    if args.json:
        print(json.dumps({**meta, "guests": results}, indent=2))
    else:
        print_report(results, meta, args.all)
    clean = all(not r["differ"] and not r["not_reached"] for r in results)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
