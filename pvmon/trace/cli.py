"""`pvmon trace ...`: inspect recorded traces."""

import click


@click.group()
def trace() -> None:
    """Inspect recorded .pvt traces."""
