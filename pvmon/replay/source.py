"""What a trace says about the run that made it, and how to run it again:
the guest image (found by the trace's identity, checked by sha256), the
backend (built-in version, or the profile recorded in the header), the
machine configuration and the recorded inputs.

A trace header is input like any other: :func:`check_header` holds every
field replay uses to the bounds ``pvmon run`` applies to its options
(:mod:`pvmon.units`) and to the shapes the recorder writes, so a crafted
header gets one line naming the field, never an engine error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pvmon.backends.base import GuestKind
from pvmon.backends.registry import kind_for_abi, resolve_version
from pvmon.errors import BackendError, GuestImageError, GuestNotFound, TraceError
from pvmon.guests.catalog import GuestImage, resolve
from pvmon.trace.reader import TraceReader
from pvmon.units import (
    cmdline_problem,
    duration_ns_problem,
    memory_problem,
    size_text,
)

if TYPE_CHECKING:
    from pvmon.backends.xen.versions import XenVersion


@dataclass
class RecordedRun:
    """A trace opened for replay. ``header``: the trace header; ``guest``:
    the image to run (None for open-loop, which needs none); ``version``: the
    recording backend's XenVersion; ``memory`` (bytes), ``cmdline``;
    console input is found frame by frame (:func:`frame_inputs`,
    :func:`recorded_inputs`)."""

    path: Path
    reader: TraceReader
    header: dict
    guest: GuestImage | None
    version: XenVersion
    memory: int
    cmdline: str
    initrd: bytes | None = None
    initrd_info: dict | None = None

    def session_args(self) -> dict:
        """Keyword arguments for :class:`~pvmon.session.Session` that rebuild
        the recorded machine (memory, command line, initrd, idle limit)."""
        from pvmon.session import DEFAULT_IDLE_LIMIT_NS
        m = self.header["machine"]
        idle = m.get("idle_limit_ns", DEFAULT_IDLE_LIMIT_NS)   # checked by check_header
        return {"memory": self.memory, "cmdline": self.cmdline, "initrd": self.initrd,
                "initrd_info": self.initrd_info, "mode": self.mode,
                "idle_limit_ns": idle if type(idle) is int else None,
                **({"vcpus": m["vcpus"]} if m.get("vcpus", 1) != 1 else {})}

    @property
    def mode(self) -> str | None:
        """The recorded guest mode (``machine.mode``: "pvh"), or None for the
        backend ABI's default (PV for Xen; every trace before PVH)."""
        return self.header["machine"].get("mode")

    @property
    def label(self) -> str:
        g = self.header.get("guest", {})
        return f"{g.get('name', '?')} on {self.version.name} (recorded)"


_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_NAME = 4096          # a guest, backend or initrd name (may be a file path)


def _bad(path: Path, name: str, value: Any, problem: str) -> TraceError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return TraceError(f"{path}: trace header field {name} = {shown} {problem}")


def _name_problem(v: Any) -> str | None:
    if not isinstance(v, str) or not v:
        return "is not a name"
    if len(v) > _MAX_NAME or not v.isprintable():
        return "is not a usable name (too long, or control characters)"
    return None


def _check_sha256(path: Path, name: str, v: Any) -> None:
    if v is not None and not (isinstance(v, str) and _SHA256.fullmatch(v)):
        raise _bad(path, name, v, "is not a SHA-256 (64 lowercase hex digits)")


def check_header(h: dict, path: Path) -> None:
    """Check every header field replay uses (the machine, the guest's and the
    backend's identity, the domain layout) against the bounds of ``pvmon run``.
    Fields an older recorder did not write may be absent. Raises TraceError
    naming the field, in one line."""
    from pvmon.engine.clock import VirtualClock

    m = h.get("machine")
    if not isinstance(m, dict):
        raise TraceError(f"{path}: trace header has no machine configuration")
    if "memory" not in m:
        raise TraceError(f"{path}: trace header has no machine.memory")
    problem = memory_problem(m["memory"])
    if problem:
        raise _bad(path, "machine.memory", m["memory"], problem)
    memory = m["memory"]
    if "cmdline" not in m:
        raise TraceError(f"{path}: trace header has no kernel command line")
    problem = cmdline_problem(m["cmdline"])
    if problem:
        raise _bad(path, "machine.cmdline", m["cmdline"], problem)
    idle = m.get("idle_limit_ns")
    if idle is not None and duration_ns_problem(idle):
        raise _bad(path, "machine.idle_limit_ns", idle, duration_ns_problem(idle))
    mode = m.get("mode")
    if mode is not None:
        from pvmon.backends.registry import MODES_BY_ABI
        abi = b.get("abi", "xen") if isinstance(b := h.get("backend"), dict) else "xen"
        if not isinstance(mode, str) or mode not in MODES_BY_ABI.get(abi, ()):
            raise _bad(path, "machine.mode", mode, "is not a guest mode pvmon knows "
                       "(pv, pvh)")
    if "vcpus" in m and (type(m["vcpus"]) is not int or not 1 <= m["vcpus"] <= 32):
        raise _bad(path, "machine.vcpus", m["vcpus"], "is not a vCPU count from 1 to 32")
    engine_khz = VirtualClock().tsc_khz
    for name, khz in (("machine.tsc_khz", m.get("tsc_khz")), ("tsc_khz", h.get("tsc_khz"))):
        if khz is not None and (type(khz) is not int or khz != engine_khz):
            raise _bad(path, name, khz, f"is not this pvmon's TSC rate ({engine_khz} kHz), "
                                        "so the run cannot be repeated")
    _check_initrd_info(m.get("initrd"), memory, path)
    g = h.get("guest")
    if g is not None:
        if not isinstance(g, dict):
            raise _bad(path, "guest", g, "is not a map")
        if g.get("name") is not None and _name_problem(g["name"]):
            raise _bad(path, "guest.name", g["name"], _name_problem(g["name"]))
        _check_sha256(path, "guest.sha256", g.get("sha256"))
        for key in ("package", "version", "release"):
            v = g.get(key)
            if v is not None and _name_problem(v):
                raise _bad(path, f"guest.{key}", v, _name_problem(v))
    b = h.get("backend")
    if isinstance(b, dict):
        if b.get("name") is not None and _name_problem(b["name"]):
            raise _bad(path, "backend.name", b["name"], _name_problem(b["name"]))
        if b.get("profile") is not None and not isinstance(b["profile"], str):
            raise _bad(path, "backend.profile", b["profile"], "is not a profile's text")
    lay = h.get("layout")
    if lay is not None:
        if not isinstance(lay, dict):
            raise _bad(path, "layout", lay, "is not a map")
        kind = _recorded_kind(b, m.get("mode"))
        problem = kind.layout_problem(lay, memory) if kind is not None else None
        if problem is not None:
            field, value, where = problem
            raise _bad(path, f"layout.{field}", value, f"is not {where}")


def _recorded_kind(backend: Any, mode: str | None = None) -> GuestKind | None:
    """The guest kind of a header's ``backend`` map's ABI (default "xen") in
    ``mode`` (``machine.mode``), or None when pvmon has none
    (:func:`recorded_version` refuses that trace)."""
    abi = backend.get("abi", "xen") if isinstance(backend, dict) else "xen"
    if not isinstance(abi, str):
        return None
    try:
        return kind_for_abi(abi if mode in (None, "pv") else f"{abi}-{mode}")
    except BackendError:
        return None


def _check_initrd_info(info: Any, memory: int, path: Path) -> None:
    if info is None or info == {}:
        return
    if not isinstance(info, dict):
        raise _bad(path, "machine.initrd", info, "is not a map")
    if _name_problem(info.get("name")):
        raise _bad(path, "machine.initrd.name", info.get("name"), _name_problem(info.get("name")))
    size = info.get("size")
    if type(size) is not int or not 0 < size <= memory:
        raise _bad(path, "machine.initrd.size", size,
                   f"is not a size from 1 byte to machine.memory ({size_text(memory)})")
    _check_sha256(path, "machine.initrd.sha256", info.get("sha256"))


def _str(v, what: str, path: Path) -> str:
    if not isinstance(v, str) or not v:
        raise TraceError(f"{path}: trace header has no {what}")
    return v


def recorded_version(header: dict, path: Path) -> XenVersion:
    """The backend a trace was recorded on. Raises BackendError when it is
    unknown to this pvmon and the trace carries no profile to rebuild it."""
    b = header.get("backend")
    if not isinstance(b, dict):
        raise TraceError(f"{path}: trace header has no backend")
    name = _str(b.get("name"), "backend name", path)
    if b.get("abi", "xen") not in ("xen", "kvm"):
        from pvmon.backends.registry import other_version
        other = other_version(name)
        if other is not None:
            return other
        raise BackendError(f"{path}: recorded on backend {name!r} (ABI {b.get('abi')}); "
                           "this pvmon replays Xen, KVM, lguest and VMI traces")
    profile = b.get("profile")
    if isinstance(profile, str) and profile:
        from pvmon.backends.profiles import profile_from_text
        return profile_from_text(profile, f"profile recorded in {path}")
    ver = resolve_version(name)
    if ver is None:
        raise BackendError(f"{path}: recorded on backend {name!r}, which this pvmon does "
                           "not know (pvmon backends lists the known ones)")
    return ver


def find_guest(header: dict, path: Path, override: str | Path | None) -> GuestImage:
    """The guest image a trace was recorded with: ``override`` if given,
    else by the trace's guest name (built-in or cache). Its sha256 must match
    the trace's. Raises GuestNotFound / GuestImageError with one line."""
    g = header.get("guest")
    if not isinstance(g, dict):
        raise TraceError(f"{path}: trace header has no guest identity")
    want = g.get("sha256")
    name = g.get("name")
    if override is not None:
        img = resolve(str(override))
    else:
        if not isinstance(name, str) or not name:
            raise TraceError(f"{path}: trace header has no guest name")
        try:
            img = resolve(name)
        except GuestNotFound:
            pkg = f" ({g.get('package')} {g.get('version')})" if g.get("package") else ""
            raise GuestNotFound(
                f"guest {name!r}{pkg} of {path.name} is not available here: run "
                f"'pvmon guests fetch {name}' or pass --guest PATH") from None
    if isinstance(want, str) and want and img.sha256 != want:
        raise GuestImageError(
            f"guest image {img.vmlinux} has sha256 {img.sha256[:16]}..., but {path.name} was "
            f"recorded with {want[:16]}... ({g.get('package') or name} "
            f"{g.get('version') or ''}); pass the matching image with --guest PATH".replace(
                " )", ")"))
    return img


def open_run(path: str | Path, guest: str | Path | None = None, *,
             need_guest: bool = True) -> RecordedRun:
    """Open a trace for replay. Raises TraceError (unreadable trace),
    GuestNotFound/GuestImageError (guest) or BackendError (backend)."""
    p = Path(path)
    reader = TraceReader(p)
    h = reader.header
    if isinstance(h.get("imported"), dict):
        reader.close()
        raise TraceError(f"{p.name} was imported from {h['imported'].get('format')} and holds "
                         "no guest memory: it cannot be verified or replayed (replay --coverage, "
                         "trace cat/stats and diff read it)")
    check_header(h, p)
    m = h["machine"]
    version = recorded_version(h, p)
    img = find_guest(h, p, guest) if need_guest else None
    info = m.get("initrd") or None
    initrd = None
    if need_guest and info:
        from pvmon.guests.initramfs import initrd_from_header
        _check_initrd_size(info, p)
        initrd = initrd_from_header(info)
    return RecordedRun(p, reader, h, img, version, m["memory"], m["cmdline"], initrd, info)


def _check_initrd_size(info: dict, path: Path) -> None:
    """Refuse, before reading it, an initrd file whose size is not the recorded one."""
    from pvmon.guests.initramfs import KINDS, initramfs_path
    name = info["name"]
    f = initramfs_path(name) if name in KINDS else Path(name).expanduser()
    try:
        size = f.stat().st_size if f.is_file() else None
    except OSError:
        size = None                 # initrd_from_header says why it cannot read it
    if size is not None and size != info["size"]:
        raise GuestImageError(f"initrd {name} is {size:,} bytes, but {path.name} was recorded "
                              f"with one of {info['size']:,} bytes")


_INPUT_MARK = b"\xa3dir\xa2in"   # msgpack of the key/value "dir": "in"


class RecordedInput(NamedTuple):
    """One recorded console input (a ``con`` event with ``dir: "in"``):
    ``seq`` of the event, the bytes that entered the ring, its recorded
    ``at`` (None when it has none), and ``rule``: where a replay on another
    backend types it, ``"prompt"`` (at an idle point where the script rule
    holds) or ``"idle"`` (at the next idle point; see
    :mod:`pvmon.dispatch.console_input`)."""

    seq: int
    data: bytes
    at: str | None
    rule: str


def _is_block(ev: dict | None) -> bool:
    """``ev`` is the guest's SCHEDOP_block hypercall (sched_op or its compat)."""
    if ev is None or ev.get("k") != "hc" or ev.get("name") not in ("sched_op", "sched_op_compat"):
        return False
    op = ev.get("op")
    return isinstance(op, dict) and op.get("cmd") == "block"


def _frame_input_events(reader: TraceReader, index: int, raw: bytes | None
                        ) -> list[RecordedInput]:
    if raw is None:
        raw = reader.frame_bytes(index)
    if _INPUT_MARK not in raw:
        return []
    evs = reader.frame_events(index)
    out = []
    for i, ev in enumerate(evs):
        if ev.get("k") != "con" or ev.get("dir") != "in" or not isinstance(ev.get("data"), bytes):
            continue
        at = ev.get("at") if isinstance(ev.get("at"), str) else None
        if at in ("prompt", "idle"):
            rule = at
        elif "at" in ev:
            rule = "idle"           # a value this pvmon does not know: no prompt to wait for
        else:
            # No ``at``: live input at an arbitrary boundary, the rest of a chunk,
            # or a trace from before ``at`` existed, whose script lines are the
            # inputs taken at an idle point (the next event is the guest's block).
            if i + 1 < len(evs):
                nxt = evs[i + 1]
            elif index + 1 < len(reader.frames):
                nxt = next(iter(reader.frame_events(index + 1)), None)
            else:
                nxt = None
            rule = "prompt" if _is_block(nxt) else "idle"
        out.append(RecordedInput(ev["seq"], ev["data"], at, rule))
    return out


def frame_inputs(reader: TraceReader, index: int, raw: bytes | None = None
                 ) -> list[tuple[int, bytes]]:
    """Recorded console input in frame ``index`` as ``[(seq, bytes)]``. The
    frame is decoded only when its raw bytes can hold an input event."""
    return [(i.seq, i.data) for i in _frame_input_events(reader, index, raw)]


def recorded_inputs(reader: TraceReader) -> list[RecordedInput]:
    """Every recorded console input of the trace, in seq order (only frames
    whose raw bytes can hold an input event are decoded)."""
    return [i for n in range(len(reader.frames)) for i in _frame_input_events(reader, n, None)]


def feed_recorded_input(dispatch, reader: TraceReader, *, by_seq: bool) -> int:
    """Hand the trace's console input to a replay's ``dispatch`` (a
    :class:`~pvmon.dispatch.xen.XenPvDispatch`) before it runs. ``by_seq``
    (verify, the recorded backend): each input at its recorded event seq, so
    the replay is byte-identical. Otherwise (closed loop on another backend,
    whose run takes another path): each input in order at the idle point the
    guest reaches, by the rules of :mod:`pvmon.dispatch.console_input` (an
    input typed at a prompt waits for the prompt). Returns how many inputs."""
    inputs = recorded_inputs(reader)
    for i in inputs:
        if by_seq:
            dispatch.schedule_input(i.seq, i.data, i.at)
        else:
            dispatch.replay_input(i.data, i.rule)
    return len(inputs)
