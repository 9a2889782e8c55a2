"""``pvmon run uml-<X>.<Y>``: the run options of ``pvmon run`` for a UML guest
(the CLI's glue; the work is :func:`pvmon.uml.runner.run_uml`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from pvmon.errors import PvmonError


def is_uml_guest(guest: str | None) -> bool:
    """Whether ``guest`` names a UML guest (``uml-6.1``)."""
    from pvmon.uml.guest import is_uml_name
    return is_uml_name(guest)


@dataclass(frozen=True)
class UmlArgs:
    """The checked run options of a UML guest: ``guest`` resolved, ``memory``
    bytes, ``initrd`` the initramfs path (or None) and its ``initrd_info``,
    ``lines`` script lines (None: none), ``record`` the checked trace path."""

    guest: Any
    memory: int
    cmdline: str | None
    initrd: Path | None
    initrd_info: dict | None
    lines: list[bytes] | None
    record: Path | None


def prepare(guest: str, *, cmdline, memory, backend, record, initramfs, initrd, script,
            input_file, xen_log=False, gdb_address=None, mode=None) -> UmlArgs:
    """Check ``pvmon run``'s (and ``pvmon boot``'s) options for a UML guest.
    Raises click.UsageError for options that do not apply, PvmonError for bad
    input or a missing guest."""
    from pvmon.files import check_output
    from pvmon.guests.initramfs import initramfs_path, load_initrd
    from pvmon.uml.guest import check_runnable, resolve
    from pvmon.uml.runner import script_lines
    from pvmon.units import parse_memory

    for given, option in ((backend not in (None, "uml"), "--backend"), (xen_log, "--xen-log"),
                          (gdb_address, "--gdb"), (mode, "--mode")):
        if given:
            raise click.UsageError(f"{option} does not apply to {guest}: a UML kernel runs "
                                   "natively under pvmon's ptrace tracer (docs/uml.md)")
    if script is not None and input_file is not None:
        raise PvmonError("give either --script or --input-file, not both")
    img = resolve(guest)
    check_runnable(img)
    _, initrd_info = load_initrd(initramfs, initrd)
    initrd_path = (initramfs_path(initramfs) if initramfs
                   else Path(initrd).expanduser().resolve() if initrd else None)
    lines = None
    if script is not None:
        lines = script_lines(script.replace("\\n", "\n"))
    elif input_file is not None and input_file != "-":
        try:
            lines = script_lines(Path(input_file).read_bytes())
        except OSError as exc:
            raise PvmonError(f"cannot read input file {input_file}: {exc.strerror}") from None
    if lines is not None and initrd_path is None:
        raise click.UsageError(f"{'--script' if script is not None else '--input-file'} needs "
                               f"an initrd (--initramfs busybox or --initrd PATH): without one "
                               f"{guest} has no userland to read console input")
    rec = None
    if record:
        ctx = click.get_current_context(silent=True)
        force = bool(ctx is not None and ctx.params.get("force"))
        rec = check_output(record, inputs=[p for p in (img.binary, initrd_path, input_file
                                                       if input_file != "-" else None) if p],
                           force=force, option="--record")
    return UmlArgs(img, parse_memory(memory), cmdline, initrd_path, initrd_info, lines, rec)


def run(guest: str, *, cmdline, memory, backend, record, timeout, quiet, initramfs, initrd,
        script, input_file, idle_exit, xen_log=False, gdb_address=None, mode=None) -> None:
    """``pvmon run`` for a UML guest: check the options, run, print the summary
    and exit with ``pvmon run``'s status (0 clean shutdown, 1 crash / idle /
    limit, 2 error, 128 + signal when SIGINT/SIGTERM stopped it)."""
    from pvmon.uml.runner import run_uml, summary

    a = prepare(guest, cmdline=cmdline, memory=memory, backend=backend, record=record,
                initramfs=initramfs, initrd=initrd, script=script, input_file=input_file,
                xen_log=xen_log, gdb_address=gdb_address, mode=mode)
    img, initrd_path, lines, rec = a.guest, a.initrd, a.lines, a.record
    stdin_fd = None
    if lines is None and (initrd_path is not None or input_file == "-"):
        try:
            stdin_fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            stdin_fd = None

    def show(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    res = run_uml(img, memory=a.memory, cmdline=cmdline, initrd=initrd_path,
                  initrd_info=a.initrd_info, record=rec, lines=lines,
                  idle_s=idle_exit or None, timeout=timeout or None,
                  show=None if quiet else show, stdin_fd=stdin_fd)
    click.echo(summary(res, img, rec), err=True)
    exit_for(res)


def exit_for(res) -> None:
    """Exit with ``pvmon run``'s status for UML result ``res``."""
    if res.trace_error:
        click.echo(f"pvmon: error: {res.trace_error}", err=True)
        sys.exit(2)
    if res.signal:
        sys.exit(128 + res.signal)
    sys.exit(0 if res.clean else 1)
