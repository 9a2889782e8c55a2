"""``python3 -m pvmon``: the same as the ``pvmon`` command."""

from pvmon.cli import main

main()
