"""The end-of-run report prints the same bytes whether Rich renders it or
pvmon writes the plain text itself (pvmon.summary), and leaves to Rich every
case it cannot be sure of."""

from __future__ import annotations

import io
import random
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from pvmon.session import RunResult
from pvmon.summary import _plain_width, _print_rich, plain_summary

NAMES = ["mmu_update", "mmuext_op", "vcpu_op", "event_channel_op", "stack_switch",
         "update_va_mapping", "console_io", "set_segment_base", "iret", "xen_version",
         "multicall", "update_descriptor", "sched_op", "x", "a_rather_long_hypercall_name"]


def _result(rng: random.Random, **over) -> RunResult:
    hcs = Counter({n: rng.choice([1, 7, 42, 999, 55476, 123456, 10**7])
                   for n in rng.sample(NAMES, rng.randrange(0, len(NAMES)))})
    faults = Counter({f: rng.randrange(1, 2000) for f in
                      rng.sample(["#PF", "#GP", "#BP", "#UD", "vector 33"], rng.randrange(0, 4))})
    fields = dict(  # noqa: C408 - RunResult's own field names
        exit_kind=rng.choice(["shutdown", "crash", "idle", "interrupted"]),
        detail=rng.choice(["SCHEDOP_shutdown(crash)", "", "idle 10 s", "x " * 30,
                           "trailing space ", "  two  spaces"]),
        rip=rng.randrange(1 << 64), symbolize=lambda a: f"sym+{a & 0xff:#x}",
        shutdown_reason=None, vtime_ns=rng.randrange(10**12), wall_s=rng.choice([0.0, 2.3131]),
        hypercalls=hcs, faults=faults, upcalls=rng.randrange(100),
        unsupported=rng.choice([{}, {"xenpmu_op": 2}, {"a": 1, "b": 300}]),
        events=rng.randrange(10**6),
        trace_path=rng.choice([None, Path("/tmp/x.pvt"), Path("out/boot 6.1.pvt")]),
        extra=rng.choice([{}, {"exits": {"msr": 1234, "io": 5, "halt": 1_000_000}}]))
    fields.update(over)
    return RunResult(**fields)


def _rich(res: RunResult, symbol: str, width: int) -> str:
    buf = io.StringIO()
    _print_rich(Console(file=buf, width=width, highlight=False, emoji=False), res, symbol)
    return buf.getvalue()


@pytest.mark.parametrize("seed", range(40))
def test_the_plain_report_is_byte_for_byte_what_rich_prints(seed):
    rng = random.Random(seed)
    res = _result(rng)
    for width in (80, 120, 40, 60, 30):
        plain = plain_summary(res, res.symbol, width)
        if plain is not None:
            assert plain == _rich(res, res.symbol, width), (seed, width)


def test_the_plain_report_is_used_for_a_usual_run_at_80_columns():
    res = _result(random.Random(1), detail="SCHEDOP_shutdown(crash)", unsupported={},
                  trace_path=Path("/tmp/boot.pvt"))
    assert plain_summary(res, "xen_hypercall_pv+0x5", 80) == _rich(res, "xen_hypercall_pv+0x5", 80)


@pytest.mark.parametrize("detail", ["[bold]not bold[/bold]", "back\\slash", "esc \x1b[31m red",
                                    "wide \u4e2d\u6587", "tab\there", "x" * 90])
def test_what_rich_might_print_differently_is_left_to_rich(detail):
    res = _result(random.Random(2), detail=detail)
    assert plain_summary(res, "sym", 80) is None
    assert "\x1b" not in _rich(res, "sym", 80)        # and Rich prints it literally


def test_a_terminal_or_rich_environment_variables_leave_the_report_to_rich(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    assert _plain_width(Tty()) is None
    assert _plain_width(io.StringIO()) is not None
    for name in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE"):
        with monkeypatch.context() as m:
            m.setenv(name, "1")
            assert _plain_width(io.StringIO()) is None
