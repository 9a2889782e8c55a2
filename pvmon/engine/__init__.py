"""The x86-64 machine on Unicorn (DESIGN.md, "Engine").

Importing this package first lets :func:`pvmon.engine.uclib.select` point
Unicorn's binding at pvmon's patched build of the pinned release, when one is
built, before any module here imports ``unicorn``.
"""

from pvmon.engine import uclib as _uclib

_uclib.select()
