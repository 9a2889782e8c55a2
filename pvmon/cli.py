"""pvmon's command line. Every :class:`~pvmon.errors.PvmonError` is caught here,
printed as one line on stderr, and turned into exit status 2."""

from __future__ import annotations

import sys

import click

from pvmon import __version__
from pvmon.completion import backend_names, guest_names
from pvmon.errors import EXIT_ERROR, PvmonError
from pvmon.literal import printable
from pvmon.units import CommandLine, MemorySize, Seconds

#: The command groups that live in other packages, imported only when a
#: command line names them or help lists them ("module:attribute"): a `pvmon run`
#: does not pay for the trace, replay and engine command modules (30-40 ms).
_LAZY_COMMANDS = {
    "guests": "pvmon.guests.cli:guests",
    "cache": "pvmon.guests.cli:cache",
    "trace": "pvmon.trace.cli:trace",
    "replay": "pvmon.replay.cli:replay",
    "diff": "pvmon.replay.cli:diff",
    "backends": "pvmon.replay.cli:backends",
    "engine": "pvmon.engine.cli:engine",
}


def _usage_error(exc: click.UsageError) -> None:
    """A usage error (bad option value, unknown option, options that do not go
    together) as one line on stderr, then exit 2. Asking for help is no error."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        raise exc
    where = f"; see '{exc.ctx.command_path} -h'" if exc.ctx is not None else ""
    msg = printable(" ".join(exc.format_message().split()).rstrip("."))
    click.echo(f"pvmon: error: {msg}{where}", err=True)
    sys.exit(EXIT_ERROR)


class _Group(click.Group):
    """Click group that turns our errors and usage errors into one readable
    line and exit 2, and imports the commands of :data:`_LAZY_COMMANDS` on
    first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in _LAZY_COMMANDS:
            import importlib
            module, attr = _LAZY_COMMANDS[cmd_name].split(":")
            cmd = getattr(importlib.import_module(module), attr)
            self.add_command(cmd, cmd_name)
        return cmd

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            _usage_error(exc)
            raise

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            _usage_error(exc)
        except PvmonError as exc:     # one line, whatever a path or a file put in it
            click.echo(f"pvmon: error: {printable(str(exc))}", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("pvmon: interrupted", err=True)
            sys.exit(130)


_EPILOG = """Shell completion (commands, options, choices) comes from click; add one
line to your shell's start-up file:

\b
  bash: eval "$(_PVMON_COMPLETE=bash_source pvmon)"   (~/.bashrc)
  zsh:  eval "$(_PVMON_COMPLETE=zsh_source pvmon)"    (~/.zshrc)
  fish: _PVMON_COMPLETE=fish_source pvmon | source    (~/.config/fish/completions/pvmon.fish)
"""


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=_EPILOG)
@click.version_option(__version__, prog_name="pvmon")
def cli() -> None:
    """pvmon: watch, record, replay and diff paravirtualized guests' hypercalls."""




def _print_summary(res) -> None:
    """The end-of-run report: exit reason, times, hypercalls, faults. What the
    guest or the user supplied (exit detail, symbol, names, the trace path) is
    printed literally."""
    from rich.table import Table

    from pvmon.literal import console, markup, text

    con = console(stderr=True)
    con.print()
    con.print(f"[bold]exit:[/bold] {markup(res.exit_kind)} - {markup(res.detail)}")
    con.print(f"      at {res.rip:#x} {markup(res.symbol)}")
    speed = (res.vtime_ns / 1e9) / res.wall_s if res.wall_s else 0.0
    con.print(f"[bold]virtual time:[/bold] {res.vtime_ns / 1e9:.6f} s   "
              f"[bold]wall time:[/bold] {res.wall_s:.3f} s   ({speed:.2f}x real time)")
    t = Table(title="hypercalls", show_edge=False, pad_edge=False)
    t.add_column("hypercall")
    t.add_column("count", justify="right")
    for name, n in res.hypercalls.most_common():
        t.add_row(text(name), str(n))
    t.add_row("[bold]total[/bold]", str(sum(res.hypercalls.values())))
    con.print(t)
    if res.faults:
        con.print("[bold]faults delivered:[/bold] " + markup(", ".join(
            f"{k} x{v}" for k, v in res.faults.most_common())))
    con.print(f"[bold]event upcalls:[/bold] {res.upcalls}")
    exits = res.extra.get("exits")
    if exits:       # an HVM guest's other ways to the host (KVM: pvmon.dispatch.kvm)
        con.print("[bold]guest exits:[/bold] " + markup(", ".join(
            f"{k} {v:,}" for k, v in exits.items())))
    if res.unsupported:
        con.print("[bold]unsupported (-ENOSYS):[/bold] " + markup(", ".join(
            f"{k} x{v}" for k, v in sorted(res.unsupported.items()))))
    if res.trace_path:
        con.print(f"[bold]trace:[/bold] {markup(res.trace_path)} ({res.events} events)")


_RUN_OPTIONS = [
    click.argument("guest", required=False, shell_complete=guest_names),
    click.option("--cmdline", default=None, type=CommandLine(),
                 help="Guest kernel command line (at most 1023 bytes)."),
    click.option("--memory", default="256M", show_default=True, type=MemorySize(),
                 help="Guest memory in MiB (256), or with a suffix K, M, G or T (512M, 1G, "
                      "1.5G) as QEMU's -m; 32M to 8G."),
    click.option("--backend", default=None, show_default="xen-4.17, or a built-in guest's own: pvtest-lguest lguest-4.13, "
                              "pvtest-vmi vmi-3.0, pvtest-kvm kvm-6.12",
                 shell_complete=backend_names,
                 help="Hypervisor backend (pvmon backends lists them)."),
    click.option("--record", "record", default=None, type=click.Path(dir_okay=False),
                 help="Write a .pvt trace of the run. An existing trace there is replaced; "
                      "any other existing file only with --force."),
    click.option("--force", is_flag=True,
                 help="With --record: overwrite an existing file that is not a pvmon trace "
                      "(never one of the run's inputs)."),
    click.option("--timeout", default=None, type=Seconds(), metavar="SECONDS",
                 help="Stop after this many wall seconds (0: no limit, the default)."),
    click.option("--initramfs", default=None, metavar="NAME",
                 help="Give the guest a built initramfs as its initrd (busybox; build it "
                      "with `pvmon guests fetch debian-6.12 --initramfs busybox`)."),
    click.option("--initrd", default=None, metavar="PATH",
                 help="Give the guest this file as its initrd module."),
    click.option("--script", default=None, metavar="TEXT",
                 help="Console input (needs an initrd): lines (newline or a literal \\n "
                      "between them), "
                      "each typed when the guest idles at a prompt."),
    click.option("--input-file", default=None, type=click.Path(dir_okay=False),
                 help="Console input (needs an initrd): the lines of this file ('-' = stdin), "
                      "as --script."),
    click.option("--mode", default=None, type=click.Choice(["pv", "pvh", "nonpae", "pae"]),
                 help="Guest mode (xl's type=): pv (the default) or pvh, a Xen guest on "
                      "the HVM platform entered at the kernel's PVH entry point; for lguest "
                      "nonpae (the default) or pae."),
    click.option("--vcpus", default=1, show_default=True, type=click.IntRange(1, 32),
                 help="Virtual CPUs of the guest (Xen PV guests: 1 to 32; docs/smp.md)."),
    click.option("--idle-exit", default=10.0, show_default=True, type=Seconds(), metavar="SECONDS",
                 help="Stop when the guest idles this many virtual seconds with no console "
                      "input left (0: never)."),
]


#: ``--gdb HOST:PORT`` of run, boot and replay (pvmon.gdb; docs/gdb.md).
_GDB_OPTION = click.option(
    "--gdb", "gdb_address", default=None, metavar="HOST:PORT",
    help="Wait for gdb on HOST:PORT (':1234' = 127.0.0.1:1234) and stop the guest before "
         "its first instruction; see docs/gdb.md.")


def _run_options(fn):
    for opt in reversed(_RUN_OPTIONS):
        fn = opt(fn)
    return fn


@cli.command()
@_run_options
@click.option("--headless", is_flag=True,
              help="No TUI: stream the console and print the summary (like `pvmon run`).")
@click.option("--paused", is_flag=True, help="Pause after the first hypercall.")
@_GDB_OPTION
def boot(guest, cmdline, memory, backend, record, force, timeout, initramfs, initrd, script,
         input_file, idle_exit, headless, paused, gdb_address=None, mode=None,
         vcpus=1) -> None:
    """Boot GUEST (default: the built-in pvtest-v2) and watch it live in the TUI.

    Keys: space pause/resume, n step to the next guest exit (hypercall, MSR,
    I/O, interrupt, ...), b break on a hypercall or an exit kind, f filter the
    stream, p canonical pv-ops, r record, o open a trace, ? help, q quit;
    with --vcpus N, v shows each vCPU's registers (docs/tui.md).
    Tab focuses the console: what you type there goes to the guest.
    A UML kernel (uml-6.1) is watched under pvmon's ptrace tracer instead
    (docs/uml.md): host system calls, console, no registers.
    With --gdb the guest waits for gdb before its first instruction and the
    status line says whether gdb is attached and where it stopped the guest.

    After quitting, the summary of the run on screen is printed (after an `r`
    reboot, the last run's). Exit status: 0 clean shutdown or quit by the user,
    1 guest crash / triple fault / hang / idle, 2 pvmon error (the trace could
    not be written included); with --headless, 130 / 143 when SIGINT / SIGTERM
    stopped the run (as for `pvmon run`). Needs a terminal on stdin, stdout and
    stderr; without one it says so and exits 2 (use --headless or `pvmon run`
    in scripts)."""
    if headless and paused:
        # refused rather than ignored: nothing could resume a paused headless run
        raise click.UsageError("--paused pauses the live view; there is none with --headless")
    if headless:
        _run(guest, cmdline, memory, backend, record, timeout, False, initramfs, initrd,
             script, input_file, idle_exit, gdb_address=gdb_address)
        return
    from pvmon.uml.cli import is_uml_guest
    if input_file == "-":
        raise PvmonError("--input-file - (stdin) needs --headless: the TUI owns the terminal")
    if is_uml_guest(guest):
        _boot_uml(guest, cmdline, memory, backend, record, timeout, initramfs, initrd, script,
                  input_file, idle_exit, paused, gdb_address, mode)
        return
    from pvmon.ui.app import run_boot
    from pvmon.ui.live_session import BootSpec

    sess_args = _session_args(guest, cmdline, memory, backend, record, initramfs, initrd,
                              script, input_file, idle_exit)
    res = run_boot(BootSpec(**sess_args, timeout=timeout, paused=paused, gdb=gdb_address))
    if res is None:
        click.echo("pvmon: the guest was still running when the TUI closed", err=True)
        sys.exit(0)
    _print_summary(res)
    sys.exit(_exit_status(res, interrupted_ok=True))


def _boot_uml(guest, cmdline, memory, backend, record, timeout, initramfs, initrd, script,
              input_file, idle_exit, paused, gdb_address, mode) -> None:
    """``pvmon boot uml-6.1``: the live view of a UML run (docs/uml.md). A
    guest with a userland waits for typed input (no idle exit) unless script
    lines were given; quitting the TUI ends the run and exits 0."""
    from pvmon.ui.app import run_uml_boot
    from pvmon.ui.uml_live import UmlBootSpec
    from pvmon.uml import cli as uml_cli
    from pvmon.uml.runner import summary

    a = uml_cli.prepare(guest, cmdline=cmdline, memory=memory, backend=backend, record=record,
                        initramfs=initramfs, initrd=initrd, script=script,
                        input_file=input_file, gdb_address=gdb_address, mode=mode)
    live_input = a.initrd is not None and a.lines is None
    res = run_uml_boot(UmlBootSpec(a, idle_s=None if live_input else (idle_exit or None),
                                   timeout=timeout or None, paused=paused))
    if res is None:
        click.echo("pvmon: the guest was still running when the TUI closed", err=True)
        sys.exit(0)
    click.echo(summary(res, a.guest, a.record), err=True)
    if res.exit_kind == "interrupted" and not res.trace_error:
        sys.exit(0)     # quit from the TUI
    uml_cli.exit_for(res)


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
@click.option("--xen-log", is_flag=True,
              help="Also print the hypervisor-log channel (what the guest writes with "
                   "console_io) on stderr, each line prefixed '(xen) '.")
@_GDB_OPTION
@click.option("--uml", "uml", is_flag=True,
              help="Run Debian's User-Mode Linux kernel (GUEST uml-6.1 unless named) natively "
                   "under pvmon's ptrace tracer; see docs/uml.md.")
def run(guest, cmdline, memory, backend, record, force, timeout, initramfs, initrd, script,
        input_file, idle_exit, quiet, xen_log, gdb_address=None, mode=None, uml=False,
        vcpus=1) -> None:
    """Boot GUEST headless (default: the built-in pvtest-v2) and stream its console.

    With an initrd (--initramfs busybox, --initrd PATH) the guest's console
    reads input: --script / --input-file lines are typed one at a time when the
    guest idles at a prompt; otherwise stdin is used (a terminal interactively,
    Ctrl-] to leave; a pipe or file like --input-file -). The run stops when the
    guest powers off, or idles --idle-exit virtual seconds with no input left.

    SIGINT (Ctrl-C when the console is not reading the terminal) and SIGTERM
    stop the run between two guest instructions, never inside a hypercall: a
    --record trace keeps every event up to there and ends with an exit record
    "interrupted", and `pvmon replay` verifies it up to that end.

    \b
    Exit status: 0 clean shutdown, 1 guest crash / triple fault / hang / idle,
    2 pvmon error (the trace could not be written included: it is kept,
    truncated), 130 stopped by SIGINT, 143 stopped by SIGTERM (128 + the
    signal's number, as the shell reports)."""
    if uml:
        from pvmon.uml.cli import is_uml_guest
        if guest is not None and not is_uml_guest(guest):
            raise click.UsageError(f"--uml runs a User-Mode Linux kernel (uml-6.1), not {guest}")
        guest = guest or "uml-6.1"
    _run(guest, cmdline, memory, backend, record, timeout, quiet, initramfs, initrd, script,
         input_file, idle_exit, xen_log=xen_log, gdb_address=gdb_address)


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
        from pvmon.tty import raw_input_mode
        restore = raw_input_mode(fd)
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
        return restore

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


#: --backend when neither the option nor the guest's catalog entry names one.
DEFAULT_BACKEND = "xen-4.17"


def _session_args(guest, cmdline, memory, backend, record, initramfs, initrd, script,
                  input_file, idle_exit) -> dict:
    """Check the run options shared by ``run`` and ``boot`` and turn them into
    :class:`~pvmon.session.Session` keyword arguments (``guest`` resolved).
    ``memory`` is bytes (or a size text, see :func:`pvmon.session.parse_memory`),
    ``idle_exit`` seconds (0 or None: never). ``--record`` is checked with
    :func:`pvmon.files.check_output` against the run's input files; ``--force``
    is read from the running command's options. Raises PvmonError on bad
    input, click.UsageError on options that do not go together."""
    from pathlib import Path

    from pvmon.dispatch.console_input import script_lines
    from pvmon.files import check_output
    from pvmon.guests.catalog import resolve
    from pvmon.guests.initramfs import initramfs_path, load_initrd
    from pvmon.session import DEFAULT_CMDLINE, parse_memory
    from pvmon.units import cmdline_problem, seconds_problem, seconds_to_ns

    if script is not None and input_file is not None:
        raise PvmonError("give either --script or --input-file, not both")
    # the click types check these too; callers passing plain values get the same checks
    problem = seconds_problem(idle_exit) if idle_exit else None
    if problem:
        raise PvmonError(f"--idle-exit {idle_exit} {problem}")
    problem = cmdline_problem(cmdline) if cmdline is not None else None
    if problem:
        raise PvmonError(f"--cmdline: the command line {problem}")
    img = resolve(guest)
    initrd_data, initrd_info = load_initrd(initramfs, initrd)
    lines = None
    if script is not None:
        lines = script_lines(script.replace("\\n", "\n"))
    elif input_file is not None and input_file != "-":
        lines = script_lines(_read_input_file(input_file))
    if initrd_data is None and (script is not None or input_file is not None):
        _input_without_initrd(img, "--script" if script is not None else "--input-file")
    if record:
        ctx = click.get_current_context(silent=True)
        force = bool(ctx is not None and ctx.params.get("force"))
        inputs = [img.vmlinux, img.vmlinuz, img.system_map, img.config, initrd,
                  initramfs_path(initramfs) if initramfs else None,
                  input_file if input_file != "-" else None]
        check_output(record, inputs=[p for p in inputs if p], force=force, option="--record")
    if cmdline is None:
        cmdline = _kind_default_cmdline(backend or getattr(img, "backend", None)) \
            or DEFAULT_CMDLINE
    return {"guest": img, "memory": parse_memory(memory), "cmdline": cmdline,
            "backend": backend or getattr(img, "backend", None) or DEFAULT_BACKEND,
            "record": Path(record) if record else None,
            "initrd": initrd_data, "initrd_info": initrd_info, "script": lines,
            "idle_limit_ns": seconds_to_ns(idle_exit),
            "mode": _mode_option() or getattr(img, "mode", None),
            **({"vcpus": _vcpus_option()} if _vcpus_option() > 1 else {})}


def _kind_default_cmdline(backend) -> str | None:
    """The command line the guest kind of ``backend`` (a name) wants when
    the user gives none (KVM: ``console=ttyS0``); None: pvmon's default.
    An unknown backend is left for the session to report."""
    from pvmon.backends.registry import guest_kind, resolve_version
    try:
        ver = resolve_version(backend) if isinstance(backend, str) else None
        if ver is None or getattr(ver, "abi", "xen") == "xen":
            return None
        from pvmon.backends.registry import backend_for_version
        kind = guest_kind(backend_for_version(ver), _mode_option())
    except PvmonError:
        return None
    return getattr(kind, "default_cmdline", None)


def _mode_option() -> str | None:
    """--mode of the running command (None: the guest's catalog mode, else the
    backend's default mode)."""
    ctx = click.get_current_context(silent=True)
    return ctx.params.get("mode") if ctx is not None else None


def _vcpus_option() -> int:
    """--vcpus of the running command (1 when it has none)."""
    ctx = click.get_current_context(silent=True)
    return (ctx.params.get("vcpus") or 1) if ctx is not None else 1


def _input_without_initrd(img, option: str) -> None:
    """Console input given to a guest without an initrd. Built-in and Debian
    guests have no userland then (the built-in ones read no input, a Debian
    kernel panics without a root file system), so the input could never be
    typed: refused. A kernel given by path may carry its own initramfs: warned."""
    if img.kind in ("builtin", "debian"):
        raise click.UsageError(
            f"{option} needs an initrd (--initramfs busybox or --initrd PATH): without one "
            f"{img.name} has no userland to read console input")
    click.echo(f"pvmon: warning: {option} without an initrd: the lines are typed only if "
               "this kernel has a userland of its own (a built-in initramfs)", err=True)


def _run(guest, cmdline, memory, backend, record, timeout, quiet, initramfs=None, initrd=None,
         script=None, input_file=None, idle_exit=10.0, xen_log=False,
         gdb_address=None) -> None:
    import os

    from pvmon.uml import cli as uml_cli

    if uml_cli.is_uml_guest(guest):       # a UML kernel runs natively under ptrace
        uml_cli.run(guest, cmdline=cmdline, memory=memory, backend=backend, record=record,
                    timeout=timeout, quiet=quiet, initramfs=initramfs, initrd=initrd,
                    script=script, input_file=input_file, idle_exit=idle_exit,
                    xen_log=xen_log, gdb_address=gdb_address, mode=_mode_option())
    from pvmon.session import Session

    args = _session_args(guest, cmdline, memory, backend, record, initramfs, initrd, script,
                         input_file, idle_exit)
    initrd_data, lines = args["initrd"], args["script"]
    fd = None
    if lines is None and (initrd_data is not None or input_file == "-"):
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            fd = None
    if fd is not None and os.isatty(fd):
        # A terminal is a live source, which never runs out: the idle exit does not
        # apply, and the trace header must say so or a replay would idle out early.
        args["idle_limit_ns"] = None
    sess = Session(args.pop("guest"), **args)
    restore = _stdin_source(sess, fd) if fd is not None else None
    console = None
    if not quiet or xen_log:
        # The guest console once (pvmon.dispatch.console_output); the hypervisor-log
        # channel only with --xen-log, on stderr.
        from pvmon.dispatch.console_output import GuestConsole, prefixed

        def show(data: bytes) -> None:
            if not quiet:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
        console = GuestConsole(show, prefixed(sys.stderr.buffer, b"(xen) ") if xen_log
                               else None)
        sess.on_console(console)
    gdb = None
    if gdb_address:             # binds now: a port in use is one line and exit 2
        from pvmon.gdb.attach import GdbAttachment
        gdb = GdbAttachment(sess, gdb_address)
        gdb.wait()
    res = None
    # Everything built so far (modules, the kernel image, the backend) lives as
    # long as the process: keep it out of the collector's passes during the run.
    import gc
    gc.freeze()
    try:
        res = sess.run(timeout=timeout, stop_on_signals=True)
    finally:
        if restore is not None:
            restore()
        if gdb is not None:
            gdb.finish(res)
    if console is not None:
        console.close()
    _print_summary(res)
    global _EXIT_WITHOUT_TEARDOWN
    _EXIT_WITHOUT_TEARDOWN = True
    sys.exit(_exit_status(res))


#: Set when a ``pvmon run`` has finished and said everything it has to say:
#: :func:`main` then ends the process without the interpreter's teardown.
_EXIT_WITHOUT_TEARDOWN = False


def _exit_now(status: int) -> None:
    """End the process with ``status`` now, as the interpreter would after a
    ``sys.exit``, less its teardown: the modules, the machine, Unicorn and the
    guest's memory are freed by the kernel at exit rather than object by
    object (about 20 ms after a Debian boot). Waits for nothing: returns
    (for an ordinary exit) when a profiler or tracer watches the process
    (``python -m cProfile`` writes its report after the program returns), a
    thread that is not a daemon still runs or stdout or stderr cannot be
    flushed; else runs the ``atexit`` handlers, flushes both and exits."""
    import atexit
    import os
    import threading

    if sys.getprofile() is not None or sys.gettrace() is not None:
        return
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(status)


def _exit_status(res, *, interrupted_ok: bool = False) -> int:
    """The exit status of ``pvmon run`` / ``boot`` for a finished run: 2 when the
    trace could not be written (said on stderr), 128 + the signal number when a
    signal ended the run (130 SIGINT, 143 SIGTERM), 0 for a clean shutdown (or
    any user stop when ``interrupted_ok``), 1 otherwise."""
    if res.trace_error:
        click.echo(f"pvmon: error: {printable(res.trace_error)}", err=True)
        return EXIT_ERROR
    if res.signal:
        from pvmon.engine.signals import exit_status
        return exit_status(res.signal)
    return 0 if res.clean or (interrupted_ok and res.exit_kind == "interrupted") else 1


def main() -> None:
    """The ``pvmon`` command (and ``python -m pvmon``). After a ``pvmon run``
    it ends the process itself (:func:`_exit_now`) rather than raise
    SystemExit to its caller; to run commands in a process that goes on, call
    :data:`cli` (as click's test runner does)."""
    global _EXIT_WITHOUT_TEARDOWN
    _EXIT_WITHOUT_TEARDOWN = False      # set by this command's run, not an earlier one
    try:
        cli(prog_name="pvmon")
    except SystemExit as exc:
        if _EXIT_WITHOUT_TEARDOWN and type(exc.code) is int:
            _exit_now(exc.code)
        raise


if __name__ == "__main__":
    main()
