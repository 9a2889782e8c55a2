"""pvmon's command line. Every :class:`~pvmon.errors.PvmonError` is caught here,
printed as one line on stderr, and turned into exit status 2."""

from __future__ import annotations

import sys

import click

from pvmon import __version__
from pvmon.engine.cli import engine
from pvmon.errors import EXIT_ERROR, PvmonError
from pvmon.guests.cli import guests
from pvmon.replay.cli import backends, diff, replay
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
cli.add_command(replay)
cli.add_command(diff)
cli.add_command(backends)
cli.add_command(engine)


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
    click.option("--initramfs", default=None, metavar="NAME",
                 help="Give the guest a built initramfs as its initrd (busybox; build it "
                      "with `pvmon guests fetch debian-6.12 --initramfs busybox`)."),
    click.option("--initrd", default=None, metavar="PATH",
                 help="Give the guest this file as its initrd module."),
    click.option("--script", default=None, metavar="TEXT",
                 help="Console input: lines (newline or a literal \\n between them), "
                      "each typed when the guest idles at a prompt."),
    click.option("--input-file", default=None, type=click.Path(dir_okay=False),
                 help="Console input: the lines of this file ('-' = stdin), as --script."),
    click.option("--idle-exit", default=10.0, show_default=True, type=float, metavar="SECONDS",
                 help="Stop when the guest idles this many virtual seconds with no console "
                      "input left (0: never)."),
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
def boot(guest, cmdline, memory, backend, record, timeout, initramfs, initrd, script,
         input_file, idle_exit, headless, paused) -> None:
    """Boot GUEST (default: the built-in pvtest-v2) and watch it live in the TUI.

    Keys: space pause/resume, n step to the next hypercall, b break on a
    hypercall, f filter the stream, r record, o open a trace, ? help, q quit.
    Tab focuses the console: what you type there goes to the guest.

    After quitting, the summary of the run on screen is printed (after an `r`
    reboot, the last run's). Exit status: 0 clean shutdown or quit by the user,
    1 guest crash / triple fault / hang / idle, 2 pvmon error. Needs a terminal
    on stdin, stdout and stderr; without one it says so and exits 2 (use
    --headless or `pvmon run` in scripts)."""
    if headless:
        _run(guest, cmdline, memory, backend, record, timeout, False, initramfs, initrd,
             script, input_file, idle_exit)
        return
    from pvmon.ui.app import run_boot
    from pvmon.ui.live_session import BootSpec

    if input_file == "-":
        raise PvmonError("--input-file - (stdin) needs --headless: the TUI owns the terminal")
    sess_args = _session_args(guest, cmdline, memory, backend, record, initramfs, initrd,
                              script, input_file, idle_exit)
    res = run_boot(BootSpec(**sess_args, timeout=timeout, paused=paused))
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

    Keys: g go to, f filter, / search, n/N next/previous match, o open, ? help, q quit.
    Needs a terminal on stdin, stdout and stderr; without one it says so and
    exits 2 (`pvmon trace cat` prints a trace)."""
    from pvmon.ui.app import run_view

    run_view(trace_path)


@cli.command()
@_run_options
@click.option("--quiet", is_flag=True, help="Do not stream the guest console.")
def run(guest, cmdline, memory, backend, record, timeout, initramfs, initrd, script,
        input_file, idle_exit, quiet) -> None:
    """Boot GUEST headless (default: the built-in pvtest-v2) and stream its console.

    With an initrd (--initramfs busybox, --initrd PATH) the guest's console
    reads input: --script / --input-file lines are typed one at a time when the
    guest idles at a prompt; otherwise stdin is used (a terminal interactively,
    Ctrl-] to leave; a pipe or file like --input-file -). The run stops when the
    guest powers off, or idles --idle-exit virtual seconds with no input left.

    Exit status: 0 clean shutdown, 1 guest crash / triple fault / hang / idle,
    2 pvmon error."""
    _run(guest, cmdline, memory, backend, record, timeout, quiet, initramfs, initrd, script,
         input_file, idle_exit)


def _read_input_file(path: str) -> bytes:
    from pvmon.errors import PvmonError
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise PvmonError(f"cannot read input file {path}: {exc.strerror}") from None


def _stdin_source(sess, fd: int):
    """Feed stdin to the guest console. A terminal: live input, raw keys
    (Ctrl-C goes to the guest, Ctrl-] leaves); returns a function restoring the
    terminal. Anything else: script lines, read by a thread as they come."""
    import os
    import threading

    inp = sess.dispatch.input
    if os.isatty(fd):
        import termios
        old = termios.tcgetattr(fd)
        new = termios.tcgetattr(fd)
        new[0] &= ~(termios.ICRNL | termios.IXON)
        new[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN)
        new[6][termios.VMIN], new[6][termios.VTIME] = 1, 0
        termios.tcsetattr(fd, termios.TCSANOW, new)
        inp.live_open = True
        click.echo("pvmon: console input from this terminal; Ctrl-] leaves", err=True)

        def pump_tty() -> None:
            while True:
                try:
                    data = os.read(fd, 1024)
                except OSError:
                    data = b""
                if not data:
                    inp.live_open = False
                    inp.post(b"")
                    return
                inp.post(data)

        threading.Thread(target=pump_tty, name="pvmon-stdin", daemon=True).start()
        return lambda: termios.tcsetattr(fd, termios.TCSAFLUSH, old)

    inp.add_script([], more=True)

    def pump_lines() -> None:
        try:
            with os.fdopen(os.dup(fd), "rb", buffering=0) as fh:
                pending = b""
                while True:
                    data = fh.read(4096)
                    if not data:
                        break
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    if lines:
                        inp.add_script([ln + b"\n" for ln in lines], more=True)
                if pending:
                    inp.add_script([pending + b"\n"], more=True)
        except OSError:
            pass
        inp.close_script()

    threading.Thread(target=pump_lines, name="pvmon-stdin", daemon=True).start()
    return None


def _session_args(guest, cmdline, memory, backend, record, initramfs, initrd, script,
                  input_file, idle_exit) -> dict:
    """Check the run options shared by ``run`` and ``boot`` and turn them into
    :class:`~pvmon.session.Session` keyword arguments (``guest`` resolved).
    Raises PvmonError on bad input."""
    from pathlib import Path

    from pvmon.dispatch.console_input import script_lines
    from pvmon.guests.catalog import resolve
    from pvmon.guests.initramfs import load_initrd
    from pvmon.session import DEFAULT_CMDLINE, parse_memory

    if script is not None and input_file is not None:
        raise PvmonError("give either --script or --input-file, not both")
    if idle_exit < 0:
        raise PvmonError("--idle-exit must be 0 (never) or a positive number of seconds")
    img = resolve(guest)
    initrd_data, initrd_info = load_initrd(initramfs, initrd)
    lines = None
    if script is not None:
        lines = script_lines(script.replace("\\n", "\n"))
    elif input_file is not None and input_file != "-":
        lines = script_lines(_read_input_file(input_file))
    return {"guest": img, "memory": parse_memory(memory), "cmdline": cmdline or DEFAULT_CMDLINE,
            "backend": backend, "record": Path(record) if record else None,
            "initrd": initrd_data, "initrd_info": initrd_info, "script": lines,
            "idle_limit_ns": int(idle_exit * 1e9) or None}


def _run(guest, cmdline, memory, backend, record, timeout, quiet, initramfs=None, initrd=None,
         script=None, input_file=None, idle_exit=10.0) -> None:
    from pvmon.session import Session

    args = _session_args(guest, cmdline, memory, backend, record, initramfs, initrd, script,
                         input_file, idle_exit)
    sess = Session(args.pop("guest"), **args)
    initrd_data, lines = args["initrd"], args["script"]
    restore = None
    if lines is None and (initrd_data is not None or input_file == "-"):
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            fd = None
        if fd is not None:
            restore = _stdin_source(sess, fd)
    if not quiet:
        out = sys.stdout.buffer

        def show(ch: str, data: bytes) -> None:
            out.write(data)
            out.flush()
        sess.on_console(show)
    try:
        res = sess.run(timeout=timeout)
    finally:
        if restore is not None:
            restore()
    _print_summary(res)
    sys.exit(0 if res.clean else 1)


def main() -> None:
    cli(prog_name="pvmon")


if __name__ == "__main__":
    main()
