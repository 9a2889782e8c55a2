"""The TCP side of the gdb stub: listen on HOST:PORT, take one client, read
its bytes on a thread and hand complete packets to the engine thread.

One client at a time: a second connection gets an ``E`` packet naming the
reason (gdb prints it) and is closed. The listener binds before the guest
starts, so a port in use is one error line (:class:`pvmon.errors.PvmonError`)
and nothing runs.
"""

from __future__ import annotations

import os
import queue
import select
import socket
import threading
from collections.abc import Callable

from pvmon.errors import PvmonError
from pvmon.gdb import rsp

#: Sent to a second client before closing it.
BUSY = b"E.pvmon: another debugger is attached to this guest"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` -> (host, port). An empty host is
    127.0.0.1 (the stub gives full control of the guest: listen on another
    interface only when asked). Port 0 picks a free port. Raises PvmonError."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        num = int(port, 10)
    except ValueError:
        raise PvmonError(f"--gdb {text!r}: expected HOST:PORT or :PORT (e.g. :1234)") from None
    if not 0 <= num <= 65535:
        raise PvmonError(f"--gdb {text!r}: port {num} is outside 0-65535")
    return host, num


class GdbServer:
    """A listening socket for one gdb client. ``host``, ``port`` as
    :func:`parse_address` returns them. Raises PvmonError when the address
    cannot be bound (in use, no such interface)."""

    def __init__(self, host: str, port: int) -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise PvmonError(f"--gdb: cannot resolve {host}: {exc.strerror}") from None
        family, _, _, _, addr = infos[0]
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind(addr)
        except OSError as exc:
            self.sock.close()
            raise PvmonError(f"--gdb: cannot listen on {host}:{port}: "
                             f"{exc.strerror or exc}") from None
        self.sock.listen(2)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.client: Connection | None = None
        self._closed = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def accept(self, stop: Callable[[], bool] = lambda: False) -> Connection | None:
        """Wait for the client (polling ``stop()`` every 0.2 s: True gives up and
        returns None). Later connections are refused by a thread."""
        self.sock.settimeout(0.2)
        while True:
            if stop():
                return None
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return None
            break
        self.sock.settimeout(None)
        self.client = Connection(conn)
        threading.Thread(target=self._refuse_others, name="pvmon-gdb-listen",
                         daemon=True).start()
        return self.client

    def _refuse_others(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.sendall(rsp.frame(BUSY))
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self._closed = True
        if self.client is not None:
            self.client.close()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Connection:
    """One client. A reader thread parses what it sends: packets go to a
    queue (:meth:`get`), acknowledged while ack mode is on; ``\\x03`` calls
    :attr:`on_interrupt` on the reader thread at once."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.packets: queue.Queue[bytes | None] = queue.Queue()
        self.ack = True
        self.on_interrupt: Callable[[], None] = lambda: None
        self.closed = False
        self._lock = threading.Lock()
        self._parser = rsp.PacketReader()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._pausing = False
        self.start_reader()

    def start_reader(self) -> None:
        """Start the reader thread (again, after :meth:`pause_reader` or in a
        forked process, which has no threads)."""
        self._pausing = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="pvmon-gdb-read", daemon=True)
        self._thread.start()

    def pause_reader(self) -> None:
        """Stop the reader thread (before a fork: the snapshot process must not
        read the client's bytes). Packets already parsed stay queued."""
        if self._thread is None:
            return
        self._pausing = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        self._thread = None

    def drain(self) -> None:
        """Forget queued packets and any partial one (a resumed snapshot: the
        process that went on has answered them)."""
        while True:
            try:
                self.packets.get_nowait()
            except queue.Empty:
                break
        self._parser = rsp.PacketReader()

    def _read(self) -> None:
        reader = self._parser
        try:
            while True:
                ready, _, _ = select.select([self.sock, self._wake_r], [], [])
                if self._wake_r in ready:
                    os.read(self._wake_r, 64)
                    if self._pausing:
                        return
                    continue
                data = self.sock.recv(65536)
                if not data:
                    break
                for item in reader.feed(data):
                    if item.kind == "packet":
                        if self.ack:
                            self._send_raw(b"+")
                        self.packets.put(item.data)
                    elif item.kind == "bad":
                        if self.ack:
                            self._send_raw(b"-")
                        else:   # no-ack mode: nobody resends, so answer with an error
                            self.packets.put(b"\x00bad")
                    elif item.kind == "interrupt":
                        self.on_interrupt()
        except (OSError, ValueError):
            pass
        self.closed = True
        self.packets.put(None)
        self.on_interrupt()        # a stub waiting for the guest learns the client left

    def get(self) -> bytes | None:
        """The next packet's payload; None once the client has gone."""
        if self.closed and self.packets.empty():
            return None
        return self.packets.get()

    def _send_raw(self, data: bytes) -> None:
        with self._lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def send(self, payload: bytes) -> None:
        """Send one packet (no resend on ``-``: TCP does not lose bytes)."""
        self._send_raw(rsp.frame(payload))

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
