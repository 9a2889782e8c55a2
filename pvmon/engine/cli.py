"""`pvmon engine ...`: which Unicorn library runs the guests, and building the
patched one (:mod:`pvmon.engine.uclib`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def engine() -> None:
    """Show or build the Unicorn library pvmon runs guests on."""


@engine.command("info")
def info_cmd() -> None:
    """Say which libunicorn this process loads and whether it carries pvmon's patches."""
    from pvmon.engine import uclib

    d = uclib.describe()
    click.echo(f"unicorn {d['unicorn']}: {d['library']}")
    if d["patched"]:
        b = d["build"] or {}
        click.echo(f"patched: yes ({', '.join(d['patches'])})")
        click.echo(f"built: {b.get('built_at', '?')} with {b.get('compiler', '?')}, "
                   f"sha256 {str(b.get('sha256', '?'))[:16]}")
    else:
        built = uclib.built_library()
        why = ("PVMON_UNICORN=stock" if built is not None else
               "not built: run `pvmon engine build`")
        click.echo(f"patched: no, the pinned wheel's library ({why})")
        click.echo("runs are not guaranteed to repeat on it (see `pvmon engine build --help`)")


@engine.command("build")
@click.option("--sdist", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Use this unicorn-2.1.4.tar.gz instead of downloading it from PyPI.")
@click.option("--jobs", "-j", type=click.IntRange(1, 256), default=None,
              help="Parallel compile jobs (default: the CPU count).")
@click.option("--force", is_flag=True, help="Build again even if a current build exists.")
def build_cmd(sdist: Path | None, jobs: int | None, force: bool) -> None:
    """Build Unicorn 2.1.4 with pvmon's eleven patches (x86 only, about 30-40 s) into
    the cache.

    Two make translated code faster without changing what the guest sees. The
    third makes runs repeatable: QEMU shrinks its TLB on a window of host time,
    so how fast the host ran could change which TLB entries the guest kept and
    send a run (or a replay) down another path; the patch counts that window in
    TLB flushes. Only the patched library guarantees that the same guest and
    inputs give the same event stream. The fourth is the HVM platform's (Xen
    PVH guests): delivery through the guest's IDT, interrupt injection, an
    MSR hook; PVH guests need it. The fifth lets the Xen PV platform refuse
    port I/O and intercept CLI, STI and control-register moves of the guest
    kernel, as Xen does. The sixth keeps stores to pages without translated
    code off the write-tracking slow path. The seventh gives a PV guest its
    debug registers: breakpoints and watchpoints raise #DB. The eighth keeps the
    jump cache across TLB flushes (revalidated instead of emptied). The ninth
    lets a translated block go on past a forward JMP in its page (off while a
    block or instruction hook is installed). The tenth runs REP MOVS/STOS a
    page at a time where the bytes are plain RAM already in the TLB. The
    eleventh gives a block a third chained exit and lets it go on past one
    conditional jump. Needs cmake, patch, make and a C compiler."""
    from pvmon.engine import uclib

    uclib.build(sdist=sdist, jobs=jobs, force=force, say=lambda m: click.echo(m, err=True))
