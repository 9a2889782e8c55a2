"""`pvmon guests ...`: fetch and list guest kernels."""

from __future__ import annotations

import click


@click.group()
def guests() -> None:
    """Fetch and list guest kernels (Debian packages and built-in reference guests)."""


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


@guests.command("fetch")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Download again even if the cache is current.")
def fetch_cmd(names: tuple[str, ...], force: bool) -> None:
    """Fetch Debian kernels (debian-6.1, debian-6.12) into the cache."""
    from pvmon.errors import GuestNotFound
    from pvmon.guests import catalog, debian

    for name in names:
        if name not in catalog.DEBIAN:
            raise GuestNotFound(
                f"cannot fetch {name!r}: fetchable guests are {', '.join(catalog.DEBIAN)}"
            )
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


@guests.command("list")
def list_cmd() -> None:
    """List built-in and Debian guests and whether they are available."""
    from rich.console import Console
    from rich.table import Table

    from pvmon.guests import catalog

    table = Table(title="pvmon guests")
    for col in ("name", "kind", "status", "version", "path"):
        table.add_column(col, overflow="fold")
    style = {"built in": "green", "cached": "green", "not fetched": "yellow", "missing": "red"}
    for row in catalog.list_guests():
        st = row["status"]
        table.add_row(
            row["name"] + (" (default)" if row["name"] == catalog.DEFAULT_GUEST else ""),
            row["kind"], f"[{style.get(st, '')}]{st}[/]",
            row["version"] or "-", row["path"] or "-",
        )
    Console().print(table)
