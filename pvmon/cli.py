"""pvmon's command line. Every :class:`~pvmon.errors.PvmonError` is caught here,
printed as one line on stderr, and turned into exit status 2."""

from __future__ import annotations

import sys

import click

from pvmon import __version__
from pvmon.errors import EXIT_ERROR, PvmonError
from pvmon.guests.cli import guests
from pvmon.trace.cli import trace


class _Group(click.Group):
    """Click group that turns our errors into one readable line and exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PvmonError as exc:
            click.echo(f"pvmon: error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("pvmon: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pvmon")
def cli() -> None:
    """pvmon: watch, record, replay and diff paravirtualized guests' hypercalls."""


cli.add_command(guests)
cli.add_command(trace)


def _print_summary(res) -> None:
    """The end-of-run report: exit reason, times, hypercalls, faults."""
    from rich.console import Console
    from rich.table import Table

    con = Console(stderr=True, highlight=False)
    con.print()
    con.print(f"[bold]exit:[/bold] {res.exit_kind} - {res.detail}")
    con.print(f"      at {res.rip:#x} {res.symbol}")
    speed = (res.vtime_ns / 1e9) / res.wall_s if res.wall_s else 0.0
    con.print(f"[bold]virtual time:[/bold] {res.vtime_ns / 1e9:.6f} s   "
              f"[bold]wall time:[/bold] {res.wall_s:.3f} s   ({speed:.2f}x real time)")
    t = Table(title="hypercalls", show_edge=False, pad_edge=False)
    t.add_column("hypercall")
    t.add_column("count", justify="right")
    for name, n in res.hypercalls.most_common():
        t.add_row(name, str(n))
    t.add_row("[bold]total[/bold]", str(sum(res.hypercalls.values())))
    con.print(t)
    if res.faults:
        con.print("[bold]faults delivered:[/bold] " + ", ".join(
            f"{k} x{v}" for k, v in res.faults.most_common()))
    con.print(f"[bold]event upcalls:[/bold] {res.upcalls}")
    if res.unsupported:
        con.print("[bold]unsupported (-ENOSYS):[/bold] " + ", ".join(
            f"{k} x{v}" for k, v in sorted(res.unsupported.items())))
    if res.trace_path:
        con.print(f"[bold]trace:[/bold] {res.trace_path} ({res.events} events)")


_RUN_OPTIONS = [
    click.argument("guest", required=False),
    click.option("--cmdline", default=None, help="Guest kernel command line."),
    click.option("--memory", default="256M", show_default=True,
                 help="Guest memory (e.g. 256M, 1G)."),
    click.option("--backend", default="xen-4.17", show_default=True,
                 help="Hypervisor backend."),
    click.option("--record", "record", default=None, type=click.Path(dir_okay=False),
                 help="Write a .pvt trace of the run."),
    click.option("--timeout", default=None, type=float,
                 help="Stop after this many wall seconds."),
]


def _run_options(fn):
    for opt in reversed(_RUN_OPTIONS):
        fn = opt(fn)
    return fn


@cli.command()
@_run_options
@click.option("--headless", is_flag=True,
              help="No TUI: stream the console and print the summary (like `pvmon run`).")
@click.option("--paused", is_flag=True, help="Pause after the first hypercall.")
def boot(guest, cmdline, memory, backend, record, timeout, headless, paused) -> None:
    """Boot GUEST (default: the built-in pvtest-v2) and watch it live in the TUI.

    Keys: space pause/resume, n step to the next hypercall, b break on a
    hypercall, f filter the stream, r record, o open a trace, ? help, q quit.
    Tab focuses the console: what you type there goes to the guest.

    After quitting, the run's summary is printed. Exit status: 0 clean
    shutdown or quit by the user, 1 guest crash / triple fault / hang,
    2 pvmon error."""
    if headless:
        _run(guest, cmdline, memory, backend, record, timeout, quiet=False)
        return
    from pathlib import Path

    from pvmon.guests.catalog import resolve
    from pvmon.session import DEFAULT_CMDLINE, parse_memory
    from pvmon.ui.app import run_boot
    from pvmon.ui.live_session import BootSpec

    spec = BootSpec(resolve(guest), memory=parse_memory(memory),
                    cmdline=cmdline or DEFAULT_CMDLINE, backend=backend,
                    record=Path(record) if record else None, timeout=timeout, paused=paused)
    res = run_boot(spec)
    if res is None:
        click.echo("pvmon: the guest was still running when the TUI closed", err=True)
        sys.exit(0)
    _print_summary(res)
    sys.exit(0 if res.clean or res.exit_kind == "interrupted" else 1)


@cli.command()
@click.argument("trace_path", metavar="TRACE", type=click.Path(dir_okay=False))
def view(trace_path) -> None:
    """Play a recorded .pvt TRACE back in the TUI: scrub the timeline, jump to an
    event or a virtual time, search, see the console as it was.

    Keys: g go to, f filter, / search, n/N next/previous match, o open, ? help, q quit."""
    from pvmon.ui.app import run_view

    run_view(trace_path)


@cli.command()
@click.argument("guest", required=False)
@click.option("--cmdline", default=None, help="Guest kernel command line.")
@click.option("--memory", default="256M", show_default=True, help="Guest memory (e.g. 256M, 1G).")
@click.option("--backend", default="xen-4.17", show_default=True, help="Hypervisor backend.")
@click.option("--record", "record", default=None, type=click.Path(dir_okay=False),
              help="Write a .pvt trace of the run.")
@click.option("--timeout", default=None, type=float, help="Stop after this many wall seconds.")
@click.option("--quiet", is_flag=True, help="Do not stream the guest console.")
def run(guest, cmdline, memory, backend, record, timeout, quiet) -> None:
    """Boot GUEST headless (default: the built-in pvtest-v2) and stream its console.

    Exit status: 0 clean shutdown, 1 guest crash / triple fault / hang, 2 pvmon error."""
    _run(guest, cmdline, memory, backend, record, timeout, quiet)


def _run(guest, cmdline, memory, backend, record, timeout, quiet) -> None:
    from pvmon.guests.catalog import resolve
    from pvmon.session import DEFAULT_CMDLINE, Session, parse_memory

    img = resolve(guest)
    sess = Session(img, memory=parse_memory(memory), cmdline=cmdline or DEFAULT_CMDLINE,
                   backend=backend, record=record)
    if not quiet:
        out = sys.stdout.buffer

        def show(ch: str, data: bytes) -> None:
            out.write(data)
            out.flush()
        sess.on_console(show)
    res = sess.run(timeout=timeout)
    _print_summary(res)
    sys.exit(0 if res.clean else 1)


def main() -> None:
    cli(prog_name="pvmon")


if __name__ == "__main__":
    main()
