"""Shell completion of guest and backend names (click's ``shell_complete``).

``pvmon run <TAB>`` offers the catalog's guest names
(:func:`pvmon.guests.catalog.known_names`), ``--backend <TAB>`` the backend
registry's (:func:`pvmon.backends.registry.list_backends`, broken profiles
left out). Completion runs on every TAB: it reads only the catalog and the
profile directory, and never raises (any error offers nothing).
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem


def guest_names(ctx: click.Context, param: click.Parameter,
                incomplete: str) -> list[CompletionItem]:
    """Guest names starting with ``incomplete``; a path (or no matching name)
    falls back to the shell's file completion, since a guest may be a file."""
    try:
        if "/" not in incomplete and not incomplete.startswith(("~", ".")):
            from pvmon.guests.catalog import known_names
            found = [CompletionItem(n) for n in known_names() if n.startswith(incomplete)]
            if found:
                return found
        return [CompletionItem(incomplete, type="file")]
    except Exception:  # noqa: BLE001 - completion must never break the shell
        return []


def backend_names(ctx: click.Context, param: click.Parameter,
                  incomplete: str) -> list[CompletionItem]:
    """Backend names starting with ``incomplete``; after a comma (a replay
    matrix, ``xen-3.4,xen-4``) the last name is completed."""
    try:
        from pvmon.backends.registry import list_backends
        head, _, last = incomplete.rpartition(",")
        prefix = head + "," if head else ""
        names = [b["name"] for b in list_backends() if not b.get("error")]
        return [CompletionItem(prefix + n) for n in names if n.startswith(last)]
    except Exception:  # noqa: BLE001 - completion must never break the shell
        return []
