"""`pvmon guests ...`: fetch and list guest kernels; `pvmon cache ...`: what the cache holds."""

from __future__ import annotations

import click


@click.group()
def guests() -> None:
    """Fetch and list guest kernels (Debian packages and built-in reference guests)."""


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


@guests.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--suite", default=None, metavar="SUITE",
              help="Fetch the named series from this Debian suite (bookworm, trixie, forky, "
                   "sid) instead of its usual one; needed for a series pvmon does not know.")
@click.option("--force", is_flag=True,
              help="Update the apt lists and download again even if the cache is current; "
                   "replace a kernel cached from another suite.")
@click.option("--initramfs", "initramfs", default=None, metavar="NAME",
              help="Also build this initramfs (busybox: from Debian's busybox-static).")
def fetch_cmd(names: tuple[str, ...], suite: str | None, force: bool,
              initramfs: str | None) -> None:
    """Fetch Debian cloud kernels into the cache, by guest name or by suite, and
    with --initramfs busybox the busybox initramfs they boot to a shell with.

    A guest name is debian-<major>.<minor>: the newest kernel of that upstream
    series in one Debian suite (debian-6.1 and debian-6.12 from bookworm,
    debian-7.2 from sid; --suite takes another). A suite name (bookworm, trixie,
    forky, sid) fetches the newest series that suite has, under its
    debian-<major>.<minor> name. apt runs with pvmon's own source list and
    package lists for each suite (in the cache), never the system's."""
    from pvmon.errors import GuestNotFound
    from pvmon.guests import apt, debian
    from pvmon.guests import initramfs as irfs

    if not names and not initramfs:
        raise click.UsageError(f"name a kernel to fetch ({', '.join(debian.SERIES)}) or a "
                               f"suite ({', '.join(apt.SUITES)}), or --initramfs busybox")
    if suite is not None and suite not in apt.SUITES:
        raise GuestNotFound(f"unknown Debian suite {suite!r}; known: {', '.join(apt.SUITES)}")
    from pvmon.uml import guest as uml

    for name in names:
        if uml.is_uml_name(name):
            continue
        if name in apt.SUITES:
            if suite is not None:
                raise click.UsageError(f"{name} is a suite already; --suite goes with "
                                       "debian-<major>.<minor> names")
        elif not debian.is_series_name(name):
            raise GuestNotFound(
                f"cannot fetch {name!r}: fetchable guests are debian-<major>.<minor> "
                f"({', '.join(debian.SERIES)}), the newest kernel of a suite "
                f"({', '.join(apt.SUITES)}) and User-Mode Linux ({', '.join(uml.SERIES)})"
            )
    if initramfs is not None and initramfs not in irfs.KINDS:
        raise GuestNotFound(f"unknown initramfs {initramfs!r}; known: {', '.join(irfs.KINDS)}")
    from pvmon.progress import progress

    for name in names:
        if uml.is_uml_name(name):
            with progress(f"{name}: fetching", unit="") as task:
                meta = uml.fetch_uml(name, force=force, suite=suite,
                                     step=lambda what: task.update(description=what))
            what = "fetched" if meta["fetched"] else "already cached"
            click.echo(f"{name}: {what} {meta['package']} {meta['version']} from "
                       f"{meta['suite']}"
                       + (f" in {meta['fetch_seconds']:.1f} s" if meta["fetched"] else ""))
            click.echo(f"  release   {meta['release']}  (User-Mode Linux kernel binary)")
            click.echo(f"  binary    {_mb(meta['binary_size']):>9}  sha256 {meta['sha256']}")
            if meta.get("libc"):    # the suite's C library, for a host with an older glibc
                lc = meta["libc"]
                click.echo(f"  libc      {lc['package']} {lc['version']} ({lc['suite']}): "
                           f"{', '.join(lc['files'])}; interpreter {lc['interp']}")
            click.echo(f"  cache     {meta['path']}")
            continue
        with progress(f"{name}: fetching", unit="") as task:
            say = lambda what: task.update(description=what)
            from_suite = suite
            if name in apt.SUITES:
                say(f"{name}: finding its newest cloud kernel series")
                series = debian.newest_series(name)
                click.echo(f"{name}: newest cloud kernel series is {series.version}: "
                           f"{series.name}")
                name, from_suite = series.name, name
            meta = debian.fetch_debian(name, force=force, step=say, suite=from_suite)
        what = "fetched" if meta["fetched"] else "already cached"
        origin = f" from {meta['suite']}" if meta.get("suite") else ""
        click.echo(f"{name}: {what} {meta['package']} {meta['version']}{origin}"
                   + (f" in {meta['fetch_seconds']:.1f} s" if meta["fetched"] else ""))
        if meta.get("kernel_package", meta["package"]) != meta["package"]:
            click.echo(f"  kernel    in {meta['kernel_package']} (split package)")
        click.echo(f"  release   {meta['release']}  ({meta['compression']} bzImage, "
                   f"boot protocol {meta['boot_protocol']})")
        click.echo(f"  vmlinuz   {_mb(meta['vmlinuz_size']):>9}  sha256 {meta['vmlinuz_sha256']}")
        click.echo(f"  vmlinux   {_mb(meta['vmlinux_size']):>9}  sha256 {meta['vmlinux_sha256']}")
        click.echo(f"  symbols   {meta['symbols']['count']} from {meta['symbols']['source']}")
        click.echo(f"  cache     {meta['path']}")
    if initramfs is not None:
        with progress(f"initramfs {initramfs}: fetching", unit="") as task:
            meta = irfs.fetch_initramfs(initramfs, force=force,
                                        step=lambda what: task.update(description=what))
        what = "built" if meta["fetched"] else "already cached"
        click.echo(f"initramfs {initramfs}: {what} from {meta['package']} {meta['version']}")
        click.echo(f"  cpio      {_mb(meta['cpio_size']):>9}  sha256 {meta['cpio_sha256']}"
                   f"  ({meta['applets']} applets)")
        click.echo(f"  cache     {meta['path']}")


@guests.command("path")
@click.argument("name")
@click.option("--vmlinux", "what", flag_value="vmlinux", default=True,
              help="The ELF vmlinux pvmon loads (the default).")
@click.option("--symbols", "what", flag_value="symbols",
              help="A file gdb loads symbols from (`gdb $(pvmon guests path NAME --symbols)`): "
                   "the vmlinux itself when it has a .symtab, else an ELF written once from "
                   "the kernel's kallsyms (docs/gdb.md).")
def path_cmd(name: str, what: str) -> None:
    """Print the path of guest NAME's vmlinux, or of a symbol file for gdb."""
    from pvmon.guests.catalog import resolve
    from pvmon.uml import guest as uml

    if uml.is_uml_name(name):      # the UML kernel binary (it has no separate symbols)
        click.echo(str(uml.resolve(name).binary))
        return
    img = resolve(name)
    if what == "vmlinux":
        click.echo(str(img.vmlinux))
        return
    from pvmon.gdb.symfile import symbol_file_for
    click.echo(str(symbol_file_for(img)))


@guests.command("list")
def list_cmd() -> None:
    """List built-in and Debian guests and whether they are available."""
    from rich.table import Table

    from pvmon.guests import catalog
    from pvmon.literal import console, text

    table = Table(title="pvmon guests")
    for col in ("name", "kind", "status", "version", "path"):
        table.add_column(col, overflow="fold")
    style = {"built in": "green", "cached": "green", "not fetched": "yellow", "missing": "red",
             "extracted": "green"}
    for row in catalog.list_guests():
        st = row["status"]
        version = row["version"] or "-"
        if row.get("suite"):
            version += f" ({row['suite']})"
        table.add_row(
            text(row["name"] + (" (default)" if row["name"] == catalog.DEFAULT_GUEST else "")),
            text(row["kind"]), text(st, style=style.get(st, "")),
            text(version), text(row["path"] or "-"),
        )
    console().print(table)
    from pvmon.guests import cachedir
    items = cachedir.items()
    click.echo(f"cache: {cachedir.human_size(sum(i.size for i in items))} in {len(items)} "
               "item(s) (pvmon cache list; pvmon cache clean)")


@click.group()
def cache() -> None:
    """Show and clean what pvmon keeps in its cache directory: fetched kernels,
    initramfs images, vmlinux files extracted from kernels given by path, the apt
    lists of the Debian suites kernels are fetched from, engine builds, and
    leftovers of interrupted work. Anything removed is fetched, extracted or
    built again when next needed."""


@cache.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: items and total.")
def cache_list(as_json: bool) -> None:
    """Every cached item with its kind, size, last use and origin, and the total."""
    import json
    import time

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from pvmon.cache import cache_root
    from pvmon.guests import cachedir

    items = cachedir.items()
    total = sum(i.size for i in items)
    if as_json:
        click.echo(json.dumps({"root": str(cache_root()), "total": total,
                               "items": [i.as_dict() for i in items]}, indent=1))
        return
    now = time.time()
    table = Table(title=f"pvmon cache: {escape(str(cache_root()))}", title_justify="left",
                  box=None, pad_edge=False)
    for col, just in (("kind", "left"), ("name", "left"), ("size", "right"),
                      ("used", "right"), ("origin", "left")):
        table.add_column(col, justify=just, overflow="fold",  # type: ignore[arg-type]
                         no_wrap=col in ("kind", "size", "used"))
    for i in items:
        table.add_row(i.kind, escape(i.name), cachedir.human_size(i.size),
                      cachedir.human_age(now - i.used), escape(i.origin))
    table.add_section()
    table.add_row("total", f"{len(items)} item(s)", cachedir.human_size(total), "", "")
    Console(highlight=False).print(table)


@cache.command("clean")
@click.option("--all", "everything", is_flag=True, help="Remove everything in the cache.")
@click.option("--kind", "kinds", multiple=True,
              type=click.Choice(["kernel", "initramfs", "extracted", "apt", "engine", "partial",
                                 "other"]),
              help="Remove items of this kind (repeatable).")
@click.option("--older-than", default=None, metavar="AGE",
              help="Remove items last used longer ago than AGE (30d, 12h, 2w; a bare "
                   "number is days).")
@click.option("--dry-run", "-n", is_flag=True, help="Say what would be removed; remove nothing.")
def cache_clean(everything: bool, kinds: tuple[str, ...], older_than: str | None,
                dry_run: bool) -> None:
    """Remove cached items: --all, or those of --kind and/or --older-than (both
    given: items matching both)."""
    from pvmon.guests import cachedir

    if not everything and not kinds and older_than is None:
        raise click.UsageError("say what to remove: --all, --kind KIND or --older-than AGE "
                               "(add --dry-run to see it first)")
    if everything and (kinds or older_than is not None):
        raise click.UsageError("--all removes everything; leave out --kind and --older-than")
    age = cachedir.parse_age(older_than) if older_than is not None else None
    chosen = cachedir.select(cachedir.items(), everything=everything, kinds=kinds,
                             older_than=age)
    verb = "would remove" if dry_run else "removed"
    freed = 0
    for item in chosen:
        if not dry_run:
            cachedir.remove(item)
        freed += item.size
        click.echo(f"{verb} {item.kind} {item.name} ({cachedir.human_size(item.size)}): "
                   f"{item.origin}")
    click.echo(f"{verb} {len(chosen)} item(s), {cachedir.human_size(freed)}"
               + ("" if chosen else " (nothing matched)"))
