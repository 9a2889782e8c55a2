"""`pvmon guests ...`: fetch and list guest kernels."""

from __future__ import annotations

import click


@click.group()
def guests() -> None:
    """Fetch and list guest kernels (Debian packages and built-in reference guests)."""


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


@guests.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Download again even if the cache is current.")
@click.option("--initramfs", "initramfs", default=None, metavar="NAME",
              help="Also build this initramfs (busybox: from Debian's busybox-static).")
def fetch_cmd(names: tuple[str, ...], force: bool, initramfs: str | None) -> None:
    """Fetch Debian kernels (debian-6.1, debian-6.12) into the cache, and with
    --initramfs busybox the busybox initramfs they boot to a shell with."""
    from pvmon.errors import GuestNotFound
    from pvmon.guests import catalog, debian
    from pvmon.guests import initramfs as irfs

    if not names and not initramfs:
        raise click.UsageError("name a kernel to fetch (debian-6.1, debian-6.12) or "
                               "--initramfs busybox")
    for name in names:
        if name not in catalog.DEBIAN:
            raise GuestNotFound(
                f"cannot fetch {name!r}: fetchable guests are {', '.join(catalog.DEBIAN)}"
            )
    if initramfs is not None and initramfs not in irfs.KINDS:
        raise GuestNotFound(f"unknown initramfs {initramfs!r}; known: {', '.join(irfs.KINDS)}")
    for name in names:
        meta = debian.fetch_debian(name, force=force)
        what = "fetched" if meta["fetched"] else "already cached"
        click.echo(f"{name}: {what} {meta['package']} {meta['version']}"
                   + (f" in {meta['fetch_seconds']:.1f} s" if meta["fetched"] else ""))
        click.echo(f"  release   {meta['release']}  ({meta['compression']} bzImage, "
                   f"boot protocol {meta['boot_protocol']})")
        click.echo(f"  vmlinuz   {_mb(meta['vmlinuz_size']):>9}  sha256 {meta['vmlinuz_sha256']}")
        click.echo(f"  vmlinux   {_mb(meta['vmlinux_size']):>9}  sha256 {meta['vmlinux_sha256']}")
        click.echo(f"  symbols   {meta['symbols']['count']} from {meta['symbols']['source']}")
        click.echo(f"  cache     {meta['path']}")
    if initramfs is not None:
        meta = irfs.fetch_initramfs(initramfs, force=force)
        what = "built" if meta["fetched"] else "already cached"
        click.echo(f"initramfs {initramfs}: {what} from {meta['package']} {meta['version']}")
        click.echo(f"  cpio      {_mb(meta['cpio_size']):>9}  sha256 {meta['cpio_sha256']}"
                   f"  ({meta['applets']} applets)")
        click.echo(f"  cache     {meta['path']}")


@guests.command("list")
def list_cmd() -> None:
    """List built-in and Debian guests and whether they are available."""
    from rich.table import Table

    from pvmon.guests import catalog
    from pvmon.literal import console, text

    table = Table(title="pvmon guests")
    for col in ("name", "kind", "status", "version", "path"):
        table.add_column(col, overflow="fold")
    style = {"built in": "green", "cached": "green", "not fetched": "yellow", "missing": "red"}
    for row in catalog.list_guests():
        st = row["status"]
        table.add_row(
            text(row["name"] + (" (default)" if row["name"] == catalog.DEFAULT_GUEST else "")),
            text(row["kind"]), text(st, style=style.get(st, "")),
            text(row["version"] or "-"), text(row["path"] or "-"),
        )
    console().print(table)
