"""The guest console as one stream, from the two channels a Xen PV guest writes.

A Xen PV guest writes its console through two channels (the ``channel``
argument of the dispatch's console listeners, :mod:`pvmon.dispatch.core`):

* ``io``: ``console_io(CONSOLEIO_write)``, which a real Xen prints in its own
  log (``xl dmesg``). Linux's early console (``xenboot``) writes here until
  hvc0 takes over; the built-in guests write every line here as well.
* ``ring``: the PV console ring (hvc0), what ``xl console`` shows.

Printing both prints many lines twice (the built-in guests write every line
to both; Linux repeats the hand-over lines). :class:`GuestConsole` prints the
console once: ``io`` until the guest first writes to the ring, then the ring
alone, with ring output that repeats the last lines ``io`` printed dropped at
the hand-over. Every ``io`` write also goes to an optional hypervisor-log
callback, which ``pvmon run --xen-log`` prints on stderr.
"""

from __future__ import annotations

from collections.abc import Callable

#: Bytes of ``io`` output kept to recognise ring output repeating it.
TAIL_BYTES = 8192


def _norm(data: bytes) -> bytes:
    """``data`` with CR-LF as LF: hvc0 writes ``\\r\\n`` where ``io`` writes ``\\n``."""
    return data.replace(b"\r\n", b"\n")


def _raw_len(raw: bytes, n: int) -> int:
    """How many bytes of ``raw`` make its first ``n`` bytes once normalised."""
    i = seen = 0
    while seen < n and i < len(raw):
        if raw[i] == 0x0D and raw[i + 1:i + 2] == b"\n":
            i += 1
            continue
        i += 1
        seen += 1
    return i


class GuestConsole:
    """A console listener (``fn(channel, data)``) that writes the guest console
    once to ``write`` and every ``io`` write to ``log`` (None: not kept).
    Call :meth:`close` when the run ends: it writes ring output still held
    back while it could have been a repeat."""

    def __init__(self, write: Callable[[bytes], None],
                 log: Callable[[bytes], None] | None = None) -> None:
        self._write = write
        self._log = log
        self._tail = b""            # the last io output written (normalised, whole lines)
        self._ring = False          # has the guest written to the ring yet?
        self._held: bytes | None = None   # ring bytes that may repeat the io tail

    def __call__(self, channel: str, data: bytes) -> None:
        data = bytes(data)
        if channel != "ring":
            if self._log is not None:
                self._log(data)
            if not self._ring:
                self._write(data)
                self._keep_tail(data)
            return
        if not self._ring:
            self._ring = True
            self._held = b"" if self._tail else None
        if self._held is None:
            self._write(data)
            return
        self._held += data
        self._settle(final=False)

    def close(self) -> None:
        """Write whatever ring output is still held back."""
        if self._held is not None:
            self._settle(final=True)

    def _keep_tail(self, data: bytes) -> None:
        tail = self._tail + _norm(data)
        if len(tail) > TAIL_BYTES:
            tail = tail[-TAIL_BYTES:]
            cut = tail.find(b"\n")
            tail = tail[cut + 1:] if cut >= 0 else b""
        self._tail = tail

    def _settle(self, final: bool) -> None:
        """Drop the longest run of whole io lines ending the io output that the
        held ring bytes start with, once that is certain, and write the rest."""
        held = self._held or b""
        norm = _norm(held)
        if not final and held.endswith(b"\r"):
            return      # a CR-LF may be split between two writes
        tail = self._tail
        starts = [0] + [i + 1 for i in range(len(tail) - 1) if tail[i] == 0x0A]
        drop = 0
        for p in starts:                    # longest repeat first
            rest = tail[p:]
            if norm.startswith(rest):
                drop = _raw_len(held, len(rest))
                break
            if rest.startswith(norm) and not final:
                return                      # may still turn out to be a repeat: wait
        self._held = None
        if held[drop:]:
            self._write(held[drop:])


def prefixed(stream, prefix: bytes) -> Callable[[bytes], None]:
    """A writer to the binary ``stream`` that starts every line with ``prefix``
    (flushing after each write), for showing a channel beside another."""
    at_start = True

    def write(data: bytes) -> None:
        nonlocal at_start
        if not data:
            return
        lines = data.split(b"\n")
        out = [(prefix if (at_start or i) and ln else b"") + ln for i, ln in enumerate(lines)]
        stream.write(b"\n".join(out))
        stream.flush()
        at_start = data.endswith(b"\n")
    return write
