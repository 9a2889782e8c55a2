"""Files pvmon writes: the one check every writer makes before it creates or
truncates its output (``run``/``boot --record``, the TUI's record key,
``trace export -o``).

The rules, so that no command can destroy data it was not asked to:

- never write onto one of the command's own inputs (the trace being read,
  the guest image, the initrd, the input file): compared by device and inode,
  so symlinks and hard links to an input are caught too;
- an existing regular file is overwritten only when the user says so
  (``--force``), unless it is what the command writes: a pvmon trace for a
  recording (re-recording replaces the old trace), an earlier export for an
  export; an empty file may always be replaced;
- a directory is refused; other non-regular files (``/dev/stdout``, a pipe)
  are written as they are, since writing them destroys nothing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from pvmon.errors import PvmonError
from pvmon.literal import printable
from pvmon.trace import format as fmt


class OutputError(PvmonError):
    """An output path that pvmon refuses to write."""


def is_pvmon_trace(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` starts like a pvmon trace (any format version, even a
    recording cut off right after its preamble). False when unreadable."""
    want = fmt.SKIP_HDR.size + fmt.PREAMBLE_STABLE.size
    try:
        with open(path, "rb") as fh:
            head = fh.read(want)
    except OSError:
        return False
    if len(head) < want:
        return False
    magic, _size = fmt.SKIP_HDR.unpack_from(head)
    tag, _version = fmt.PREAMBLE_STABLE.unpack_from(head, fmt.SKIP_HDR.size)
    return magic == fmt.PREAMBLE_MAGIC and tag == fmt.PREAMBLE_TAG


def is_pvmon_export(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` starts like a ``pvmon trace export`` (JSON lines or
    Perfetto JSON, both of which begin with the trace header). False when
    unreadable."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.startswith(b"{") and b'"pvmon-trace"' in head


_KINDS = {"trace": (is_pvmon_trace, "a pvmon trace"),
          "export": (is_pvmon_export, "a pvmon trace export")}


def check_output(path: str | os.PathLike[str], *,
                 inputs: Iterable[str | os.PathLike[str] | None] = (),
                 force: bool = False, option: str = "output", kind: str = "trace",
                 force_option: str | None = "--force") -> Path:
    """Check that ``path`` may be written (see the module's rules) and return
    it as a Path. ``inputs``: the files the command reads (None entries and
    missing files are skipped). ``force``: the user allowed overwriting an
    existing file (writing onto an input is refused even then). ``option``:
    how the user named the path (``--record``), for messages. ``kind``:
    what the command writes, ``"trace"`` or ``"export"``; an existing file
    of that kind is replaced without ``force``. ``force_option``: the option
    that allows overwriting, named in the refusal (None: there is none).

    Raises :class:`OutputError` with one line. Checks what is there now; a
    file that appears between the check and the write is not caught."""
    out = Path(path)
    shown = printable(str(out))
    try:
        st = os.stat(out)            # follows symlinks: what would be written
    except FileNotFoundError:
        return out                   # nothing there (or a dangling symlink): nothing lost
    except OSError as exc:
        raise OutputError(f"{option} {shown}: cannot check the file: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{option} {shown} is a directory")
    for inp in inputs:
        if inp is None:
            continue
        try:
            ist = os.stat(inp)
        except OSError:
            continue
        if (ist.st_dev, ist.st_ino) == (st.st_dev, st.st_ino):
            same = "" if os.path.abspath(inp) == os.path.abspath(out) else \
                f" ({printable(str(inp))})"
            raise OutputError(f"{option} {shown} is an input of this command{same}; "
                              "writing it would destroy it: choose another file")
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or force:
        return out
    replaceable, noun = _KINDS[kind]
    if replaceable(out):
        return out
    how = f"pass {force_option} to overwrite it" if force_option else "choose another file"
    raise OutputError(f"{option} {shown}{_link(out)} exists and is not {noun}; {how}")


def _link(path: Path) -> str:
    """`` (a link to X)`` when ``path`` is a symlink, so a refusal names what it protects."""
    if not path.is_symlink():
        return ""
    return f" (a link to {printable(str(path.resolve()))})"
