"""GDB remote serial protocol framing: packets in, packets out.

A packet on the wire is ``$payload#cs`` where ``cs`` is the modulo-256 sum
of the payload bytes as two hex digits; ``}`` escapes the next byte (xor
0x20); the receiver acknowledges with ``+`` (or ``-`` to ask again) until
no-ack mode is agreed. A lone ``\\x03`` byte outside a packet is an
interrupt request (gdb's Ctrl-C). Reference: the GDB manual, appendix E
"GDB Remote Serial Protocol" (sections "Overview" and "Interrupts").
"""

from __future__ import annotations

from dataclasses import dataclass

INTERRUPT = b"\x03"
#: The largest packet payload we accept (bytes, after unescaping); anything
#: longer is dropped and answered with an error (the stub advertises less).
MAX_PACKET = 64 * 1024
_ESCAPED = frozenset(b"$#}*")


def checksum(payload: bytes) -> int:
    """The RSP checksum of ``payload``: the sum of its bytes modulo 256."""
    return sum(payload) & 0xFF


def escape(payload: bytes) -> bytes:
    """Escape ``$ # } *`` in an outgoing payload (``}`` then the byte xor 0x20)."""
    if not any(b in _ESCAPED for b in payload):
        return payload
    out = bytearray()
    for b in payload:
        if b in _ESCAPED:
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    """Undo :func:`escape` (a trailing lone ``}`` is kept as is)."""
    if b"}" not in data:
        return data
    out = bytearray()
    it = iter(range(len(data)))
    for i in it:
        b = data[i]
        if b == 0x7D and i + 1 < len(data):
            out.append(data[i + 1] ^ 0x20)
            next(it, None)
        else:
            out.append(b)
    return bytes(out)


def frame(payload: bytes) -> bytes:
    """One outgoing packet: ``$`` escaped payload ``#`` checksum."""
    body = escape(payload)
    return b"$" + body + b"#" + b"%02x" % checksum(body)


@dataclass
class Item:
    """One thing read from the client. ``kind``: ``"packet"`` (``data`` is the
    unescaped payload), ``"bad"`` (a packet with a wrong checksum or too long;
    ``data`` says why), ``"interrupt"`` (a ``\\x03``), ``"ack"`` / ``"nak"``."""

    kind: str
    data: bytes = b""


class PacketReader:
    """Incremental parser: :meth:`feed` bytes as they arrive (split anywhere),
    get back the complete :class:`Item` s. Never raises on any input; bounded
    memory (a packet longer than :data:`MAX_PACKET` is dropped as ``bad``)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = 0            # 0 between packets, 1 payload, 2/3 checksum digits
        self._digits = bytearray()
        self._too_long = False

    def feed(self, data: bytes) -> list[Item]:
        out: list[Item] = []
        i, n = 0, len(data)
        while i < n:
            state = self._state
            if state == 0:
                b = data[i]
                i += 1
                if b == 0x24:            # '$'
                    self._state = 1
                    self._too_long = False
                    self._buf.clear()
                elif b == 0x03:
                    out.append(Item("interrupt"))
                elif b == 0x2B:          # '+'
                    out.append(Item("ack"))
                elif b == 0x2D:          # '-'
                    out.append(Item("nak"))
                # anything else between packets is noise and ignored
            elif state == 1:
                end = data.find(b"#", i)
                chunk = data[i:] if end < 0 else data[i:end]
                if not self._too_long:
                    if len(self._buf) + len(chunk) > MAX_PACKET:
                        self._too_long = True
                        self._buf.clear()
                    else:
                        self._buf += chunk
                if end < 0:
                    i = n
                else:
                    i = end + 1
                    self._state = 2
                    self._digits.clear()
            else:
                self._digits.append(data[i])
                i += 1
                if len(self._digits) == 2:
                    self._state = 0
                    out.append(self._finish())
        return out

    def _finish(self) -> Item:
        body = bytes(self._buf)
        self._buf.clear()
        if self._too_long:
            return Item("bad", b"packet too long")
        try:
            want = int(bytes(self._digits), 16)
        except ValueError:
            want = -1
        if want != checksum(body):
            return Item("bad", b"bad checksum")
        return Item("packet", unescape(body))


def hex_bytes(data: bytes) -> bytes:
    """``data`` as lower-case hex (how RSP carries memory and registers)."""
    return data.hex().encode()


def parse_hex(text: bytes) -> int:
    """A hex number from a packet. Raises ValueError on anything else."""
    if not text or len(text) > 32:
        raise ValueError("bad hex number")
    return int(text, 16)
