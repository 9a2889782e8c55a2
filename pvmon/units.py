"""Sizes, durations and command lines, as users give them and as traces carry
them: parsing, the bounds pvmon accepts, and click parameter types.

The same bounds apply to a command-line option and to the trace header field
that records it (replay checks headers with the ``*_problem`` functions), so
a trace can only ask for what ``pvmon run`` could have run.

Units follow what users of QEMU expect: a memory size is MiB unless it has a
suffix (``256`` = ``256M``; ``K``, ``M``, ``G``, ``T``, as QEMU's ``-m``;
``B`` for bytes; ``1.5G`` is fine); durations are seconds, finite and not
negative, with 0 meaning no limit.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction
from typing import Any

import click

from pvmon.errors import PvmonError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
PAGE_SIZE = 4096

#: Guest memory pvmon runs, in bytes (inclusive); always whole 4 KiB pages.
MIN_MEMORY = 32 * MiB
MAX_MEMORY = 8 * GiB

#: The longest duration accepted anywhere (about 31.7 years), in seconds.
MAX_SECONDS = 10 ** 9

#: The longest guest command line in bytes: Xen's start_info.cmd_line holds
#: MAX_GUEST_CMDLINE (1024) bytes including the terminating NUL.
MAX_CMDLINE_BYTES = 1023

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMGT]?)(I?B)?\s*", re.IGNORECASE)
_UNIT = {"": MiB, "K": KiB, "M": MiB, "G": GiB, "T": 1 << 40}


def size_text(n: int) -> str:
    """``268435456`` -> ``256 MiB``; ``1536 MiB`` -> ``1.5 GiB``; small sizes in bytes."""
    for unit, size in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= size:
            return f"{n / size:.6g} {unit}"
    return f"{n} bytes"


def memory_problem(n: Any) -> str | None:
    """What is wrong with ``n`` as a guest memory size in bytes, or None."""
    if type(n) is not int:
        return "is not a whole number of bytes"
    if not MIN_MEMORY <= n <= MAX_MEMORY:
        return f"({size_text(n)}) is out of range: 32 MiB to 8 GiB"
    if n % PAGE_SIZE:
        return f"({n:,} bytes) is not a whole number of 4 KiB pages"
    return None


def parse_memory(text: str | int) -> int:
    """A memory size -> bytes. MiB by default (``256``), or with a suffix
    ``K``/``M``/``G``/``T`` (``512M``, ``1G``, ``1.5G``; ``MB``/``MiB`` too) or
    ``B`` (bytes), as QEMU's ``-m``; an int is already bytes. The result is
    32 MiB to 8 GiB in whole 4 KiB pages. Raises PvmonError (one line)."""
    if type(text) is int:
        val: int | Fraction = text
    else:
        m = _SIZE.fullmatch(str(text))
        unit = (m.group(2) or "").upper() if m else ""
        suffix = (m.group(3) or "").upper() if m else ""
        if not m or (suffix == "IB" and not unit):
            raise PvmonError(f"bad memory size {str(text)!r}: give MiB (256) or a size with "
                             "K, M, G or T (512M, 1G, 1.5G)")
        mult = 1 if suffix == "B" and not unit else _UNIT[unit]
        val = Fraction(Decimal(m.group(1))) * mult
        if val.denominator != 1:
            raise PvmonError(f"memory size {str(text)!r} is not a whole number of bytes")
    problem = memory_problem(int(val))
    if problem:
        raise PvmonError(f"memory size {str(text)!r} {problem}")
    return int(val)


def seconds_problem(v: float) -> str | None:
    """What is wrong with ``v`` as a duration in seconds, or None."""
    if not math.isfinite(v):
        return "is not a finite number of seconds"
    if v < 0:
        return "is negative"
    if v > MAX_SECONDS:
        return f"is more than {MAX_SECONDS:.0e} seconds"
    return None


def duration_ns_problem(n: Any) -> str | None:
    """What is wrong with ``n`` as a recorded limit in virtual ns (a positive
    int within :data:`MAX_SECONDS`), or None."""
    if type(n) is not int:
        return "is not a whole number of nanoseconds"
    if not 0 < n <= MAX_SECONDS * 10 ** 9:
        return f"is out of range: 1 ns to {MAX_SECONDS:.0e} s"
    return None


def seconds_to_ns(v: float | None) -> int | None:
    """Seconds -> ns for a limit where 0/None means none; never rounds a
    positive limit down to 0 (which would mean none)."""
    if not v:
        return None
    return max(1, round(v * 1e9))


def cmdline_problem(s: Any) -> str | None:
    """What is wrong with ``s`` as a guest kernel command line, or None."""
    if not isinstance(s, str):
        return "is not text"
    if "\x00" in s:
        return "holds a NUL character"
    try:
        n = len(s.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8 text"
    if n > MAX_CMDLINE_BYTES:
        return f"is {n} bytes long; a Xen guest's command line holds at most {MAX_CMDLINE_BYTES}"
    return None


class MemorySize(click.ParamType):
    """``--memory``: MiB by default, or K/M/G/T/B suffixed (:func:`parse_memory`); bytes."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        try:
            return parse_memory(value)
        except PvmonError as exc:
            self.fail(str(exc), param, ctx)


class Seconds(click.ParamType):
    """A duration in seconds: finite, 0 or more, at most :data:`MAX_SECONDS`.
    0 means no limit and converts to None."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float | None:
        if value is None:
            return None
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds (0: no limit)", param, ctx)
        problem = seconds_problem(v)
        if problem:
            self.fail(f"{value!r} {problem}; give seconds, 0 or more (0: no limit)", param, ctx)
        return v or None


class CommandLine(click.ParamType):
    """A guest kernel command line (:func:`cmdline_problem`)."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        problem = cmdline_problem(value)
        if problem:
            self.fail(f"the command line {problem}", param, ctx)
        return value
