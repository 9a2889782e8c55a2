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


def main() -> None:
    cli(prog_name="pvmon")


if __name__ == "__main__":
    main()
