"""`pvmon guests ...`: fetch and list guest kernels."""

import click


@click.group()
def guests() -> None:
    """Fetch and list guest kernels (Debian packages and built-in reference guests)."""
