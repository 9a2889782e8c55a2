"""Comparing trace events: alignment keys, field-by-field differences, and
the alignment of two event sequences (:func:`align` for lists,
:func:`align_stream` for streams of any length in bounded memory).

Events are the dicts of docs/trace-format.md. Two hypercall events are "the
same call" when ABI, name and sub-op agree (their alignment key); they then
differ by arguments, result, memory written, memory read or events raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from rapidfuzz.distance import Indel

# Kinds that take part in alignment. TSC reads are inputs the engine supplies;
# after the first divergence their number and values follow the guest's path,
# so they are compared in verify mode only.
ALIGNED_KINDS = frozenset({"hc", "fault", "upcall", "con", "cpuid", "exit", "msr"})


def subop_of(ev: dict):
    """The decoded sub-op of a hypercall event (``op["cmd"]``), or None."""
    op = ev.get("op")
    if isinstance(op, dict):
        cmd = op.get("cmd")
        if "type" in op and ev.get("name") == "vm_assist":
            return f"{cmd}:{op['type']}"
        if cmd is None and "ops" in op and isinstance(op["ops"], list) and op["ops"]:
            return f"{op['ops'][0]}…" if len(op["ops"]) > 1 else op["ops"][0]
        return cmd
    return None


def key(ev: dict) -> str:
    """Alignment key: what the guest asked for, not how it was answered."""
    k = ev.get("k")
    if k == "hc":
        sub = subop_of(ev)
        return f"{ev.get('abi', 'xen')}:{ev.get('name')}" + (f":{sub}" if sub is not None else "")
    if k == "fault":
        return f"fault:{ev.get('vec')}"
    if k == "con":
        return f"con:{ev.get('dir')}:{ev.get('ch')}"
    if k == "cpuid":
        return f"cpuid:{ev.get('leaf')}:{ev.get('sub')}"
    if k == "msr":      # HVM guests (KVM's paravirtual interface is mostly MSRs)
        return f"msr:{ev.get('dir')}:{ev.get('msr')}"
    return str(k)


@dataclass(frozen=True)
class Delta:
    """One way two aligned events differ. ``what``: call | result | memory |
    memory-read | events | output | kind; ``detail``: one line."""

    what: str
    detail: str

    def as_dict(self) -> dict:
        return {"what": self.what, "detail": self.detail}


def result_text(v) -> str:
    """A hypercall result for reports: ``-EINVAL`` for errors, else the number."""
    if isinstance(v, int) and v < 0:
        from pvmon.backends.registry import abi_names
        return f"-{abi_names('xen').ERRNO_NAMES.get(-v, -v)}"
    return str(v)


def _mem(entries) -> dict:
    out = {}
    for e in entries or ():
        if isinstance(e, (list, tuple)) and len(e) == 3:
            out[(e[0], e[1])] = e[2]
    return out


def memory_delta(a, b, label: str) -> str | None:
    """One line on how two ``[[space, addr, bytes]]`` lists differ, or None
    when they hold the same bytes at the same places."""
    ma, mb = _mem(a), _mem(b)
    if ma == mb:
        return None
    only_a = [k for k in ma if k not in mb]
    only_b = [k for k in mb if k not in ma]
    changed = [k for k in ma if k in mb and ma[k] != mb[k]]
    parts = []
    if changed:
        sp, addr = changed[0]
        parts.append(f"{len(changed)} {label} with different bytes (first at {sp}:{addr:#x})")
    if only_a:
        sp, addr = only_a[0]
        parts.append(f"{len(only_a)} {label} only on the left (first {sp}:{addr:#x})")
    if only_b:
        sp, addr = only_b[0]
        parts.append(f"{len(only_b)} {label} only on the right (first {sp}:{addr:#x})")
    return "; ".join(parts)


def compare(a: dict, b: dict, *, reads: bool = True) -> list[Delta]:
    """Differences between two events at an aligned point (empty: the same).
    ``reads``: also compare the memory the backend read (differences there
    usually mean the guest state already differed)."""
    if a.get("k") != b.get("k"):
        return [Delta("kind", f"{a.get('k')} vs {b.get('k')}")]
    k = a["k"]
    out: list[Delta] = []
    if k == "hc":
        if key(a) != key(b):
            out.append(Delta("call", f"{key(a)} vs {key(b)}"))
        elif a.get("args") != b.get("args"):
            # raw argument registers; the decoded "op" is the backend's reading of them
            out.append(Delta("call", "same call with different arguments"))
        # iret never returns to its caller: its "ret" is the RAX it restored
        if a.get("ret") != b.get("ret") and a.get("name") != "iret":
            out.append(Delta("result", f"{result_text(a.get('ret'))} vs {result_text(b.get('ret'))}"))
        d = memory_delta(a.get("wr"), b.get("wr"), "writes")
        if d:
            out.append(Delta("memory", d))
        if a.get("ev") != b.get("ev"):
            out.append(Delta("events", f"raised {a.get('ev')} vs {b.get('ev')}"))
        if reads:
            d = memory_delta(a.get("rd"), b.get("rd"), "reads")
            if d:
                out.append(Delta("memory-read", d))
        return out
    if k == "con":
        if a.get("data") != b.get("data"):
            out.append(Delta("output", "console bytes differ"))
        return out
    if k == "exit":
        if (a.get("reason"), a.get("detail")) != (b.get("reason"), b.get("detail")):
            out.append(Delta("result", f"ended {a.get('reason')} ({a.get('detail')}) vs "
                                       f"{b.get('reason')} ({b.get('detail')})"))
        return out
    if k == "cpuid":
        if a.get("out") != b.get("out"):
            out.append(Delta("result", f"cpuid {a.get('leaf'):#x} returned {a.get('out')} "
                                       f"vs {b.get('out')}"))
        return out
    if k == "msr":
        # whether the host had the MSR; values (addresses, TSC deadlines) follow the guest
        if bool(a.get("gp")) != bool(b.get("gp")) or key(a) != key(b):
            side = lambda e: "#GP" if e.get("gp") else "handled"
            out.append(Delta("result", f"{'rdmsr' if a.get('dir') == 'rd' else 'wrmsr'} "
                                       f"{a.get('msr', 0):#x}: {side(a)} vs {side(b)}"))
        return out
    skip = {"seq", "t", "cpu"}
    if {x: v for x, v in a.items() if x not in skip} != \
            {x: v for x, v in b.items() if x not in skip}:
        out.append(Delta("result", f"{k} events differ"))
    return out


# The same operation through an older and a newer interface (xen/include/public/
# xen.h: the *_compat calls are the pre-3.0.2 entry points; set_timer_op and
# set_callbacks predate VCPUOP_set_singleshot_timer and CALLBACKOP_register).
EQUIVALENT = {"event_channel_op_compat": "event_channel_op", "sched_op_compat": "sched_op",
              "physdev_op_compat": "physdev_op",
              "set_timer_op": "vcpu_op:set_singleshot_timer",
              "set_callbacks": "callback_op:register"}


def operation(ev: dict) -> str:
    """Like :func:`key`, but the same operation through an older or newer
    interface maps to one name (``sched_op_compat:block`` -> ``sched_op:block``)."""
    if ev.get("k") != "hc":
        return key(ev)
    name = str(ev.get("name"))
    canon = EQUIVALENT.get(name, name)
    if ":" in canon:
        return f"{ev.get('abi', 'xen')}:{canon}"
    sub = subop_of(ev)
    return f"{ev.get('abi', 'xen')}:{canon}" + (f":{sub}" if sub is not None else "")


def align(a: list[dict], b: list[dict], key_fn=key) -> list[tuple[str, int, int, int, int]]:
    """Align two event lists by ``key_fn`` (default :func:`key`; longest common
    subsequence, rapidfuzz's Indel distance in C++): difflib-style opcodes
    ``(tag, a_lo, a_hi, b_lo, b_hi)`` with tag equal | insert | delete | replace.
    Time and memory grow with ``len(a) * len(b)`` (bits): for streams of any
    length use :func:`align_stream`."""
    table: dict[str, int] = {}
    ka = [table.setdefault(key_fn(e), len(table)) for e in a]
    kb = [table.setdefault(key_fn(e), len(table)) for e in b]
    return [tuple(op) for op in Indel.opcodes(ka, kb)]


# Events of each stream :func:`align_stream` holds at most twice this many of.
ALIGN_WINDOW = 2048
# Equal keys in a row that count as the two streams being back in step.
SYNC_RUN = 16
_FIRST_SPAN = 64        # events of each side the first alignment of a mismatch looks at

Block = tuple[str, list[dict], list[dict]]


def align_stream(a: Iterable[dict], b: Iterable[dict], key_fn: Callable[[dict], str] = key,
                 window: int = ALIGN_WINDOW) -> Iterator[Block]:
    """Align two event streams of any length in bounded memory: blocks
    ``(tag, a_events, b_events)`` in stream order, tag equal | insert | delete |
    replace as in :func:`align` (equal: the same keys, pairwise; insert: events
    only in ``b``; delete: only in ``a``; replace: a run of each).

    At most ``2 * window`` events of each stream are held. When both streams
    fit in that, the blocks are exactly :func:`align`'s. Otherwise the streams
    are walked: a run of equal keys at the head of both is taken as it is (a
    common prefix is part of some longest common subsequence); at a mismatch,
    the heads are aligned (:func:`align`, 64 events a side, then 4x more up to
    the whole window) until the alignment gets back in step (``SYNC_RUN`` equal
    keys in a row), and the blocks before that point are taken. Where no such
    point lies within the window (the runs have nothing in common), the
    alignment of the whole window is taken up to its first ``window`` events
    of each side. Taking only what lies before a return to step keeps a
    window's arbitrary end from pulling events out of step in a repetitive
    stretch. ``window`` >= ``SYNC_RUN``."""
    if window < SYNC_RUN:
        raise ValueError(f"window must be at least {SYNC_RUN}")
    ia, ib = iter(a), iter(b)
    wa: list[dict] = []
    wb: list[dict] = []
    ka: list[str] = []     # their keys
    kb: list[str] = []
    end_a = end_b = False
    full = 2 * window
    first = True
    while True:
        if not end_a:
            more = list(islice(ia, full - len(wa)))
            end_a = len(wa) + len(more) < full
            wa += more
            ka += map(key_fn, more)
        if not end_b:
            more = list(islice(ib, full - len(wb)))
            end_b = len(wb) + len(more) < full
            wb += more
            kb += map(key_fn, more)
        if not wa and not wb:
            return
        if first and end_a and end_b:
            for tag, a0, a1, b0, b1 in align(wa, wb, key_fn):
                yield tag, wa[a0:a1], wb[b0:b1]
            return
        first = False
        p = _common_prefix(ka, kb)
        if p:
            blocks = [("equal", 0, p, 0, p)]
        else:
            blocks = _past_mismatch(ka, kb, end_a, end_b, window)
        for tag, a0, a1, b0, b1 in blocks:
            yield tag, wa[a0:a1], wb[b0:b1]
        cut_a, cut_b = blocks[-1][2], blocks[-1][4]
        del wa[:cut_a], ka[:cut_a], wb[:cut_b], kb[:cut_b]


def _common_prefix(ka: list[str], kb: list[str]) -> int:
    n = min(len(ka), len(kb))
    if ka[:n] == kb[:n]:
        return n
    return next(i for i, (x, y) in enumerate(zip(ka, kb)) if x != y)


def _opcodes(ka: list[str], kb: list[str]) -> list[tuple[str, int, int, int, int]]:
    table: dict[str, int] = {}
    ia = [table.setdefault(k, len(table)) for k in ka]
    ib = [table.setdefault(k, len(table)) for k in kb]
    return [tuple(op) for op in Indel.opcodes(ia, ib)]


def _past_mismatch(ka: list[str], kb: list[str], end_a: bool, end_b: bool,
                   window: int) -> list[tuple[str, int, int, int, int]]:
    """Opcodes taking two windows whose first keys differ past their
    mismatch (non-empty, each within the windows: see :func:`align_stream`)."""
    span = _FIRST_SPAN
    while True:
        sa, sb = min(span, len(ka)), min(span, len(kb))
        ops = _opcodes(ka[:sa], kb[:sb])
        if sa == len(ka) and end_a and sb == len(kb) and end_b:
            return ops                     # the rest of both streams
        for i, (tag, a0, a1, _b0, _b1) in enumerate(ops):
            if tag == "equal" and a1 - a0 >= SYNC_RUN and i:
                return ops[:i]             # back in step: the prefix walk goes on from here
        if sa == len(ka) and sb == len(kb):
            break
        span *= 4
    # Nothing in common for a whole window: take its first `window` events a side
    # (all of a side that has ended), cutting the block that crosses that line.
    lim_a = len(ka) if end_a else window
    lim_b = len(kb) if end_b else window
    out = []
    for tag, a0, a1, b0, b1 in ops:
        if tag == "equal":
            m = min(a1 - a0, lim_a - a0, lim_b - b0)
            c1, d1 = a0 + m, b0 + m
        else:
            c1, d1 = min(a1, lim_a), min(b1, lim_b)
        if c1 <= a0 and d1 <= b0:
            break
        if tag not in ("equal", "insert", "delete"):   # a cut replace may lose a side
            tag = "replace" if c1 > a0 and d1 > b0 else "delete" if c1 > a0 else "insert"
        out.append((tag, a0, c1, b0, d1))
        if (c1, d1) != (a1, b1):
            break
    return out
