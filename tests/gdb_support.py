"""Helpers for the gdb stub tests: start pvmon with --gdb on a free port,
drive the real gdb in batch mode, or talk the remote protocol by hand."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pvmon.gdb import rsp

ROOT = Path(__file__).resolve().parent.parent
GDB = shutil.which("gdb")
needs_gdb = pytest.mark.skipif(GDB is None, reason="gdb is not installed (scripts/setup.sh)")


class Pvmon:
    """``pvmon ARGS --gdb 127.0.0.1:0`` in the background; :attr:`port` once
    it listens."""

    def __init__(self, *args: str, gdb: bool = True) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "pvmon", *args]
        if gdb:
            cmd += ["--gdb", "127.0.0.1:0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, cwd=ROOT)
        self.stderr_head = b""
        self.port = 0
        if gdb:
            line = self.proc.stderr.readline()
            self.stderr_head = line
            found = re.search(rb"waiting for gdb on 127\.0\.0\.1:(\d+)", line)
            if not found:
                _, err = self.proc.communicate(timeout=60)
                raise AssertionError(f"pvmon did not listen: {line + err!r}")
            self.port = int(found.group(1))

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        """(exit status, stdout, stderr); a run still going after ``timeout``
        seconds is killed (no process outlives its test) and the test fails."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        return self.proc.returncode, out.decode(errors="replace"), \
            (self.stderr_head + err).decode(errors="replace")


def run_gdb(port: int, commands: list[str], *, file: str | Path | None = None,
            timeout: float = 120) -> str:
    """Run gdb in batch mode against ``port``: ``commands`` after ``target
    remote``. Returns stdout and stderr together."""
    cmd = [GDB, "-batch", "-nx", "-ex", "set pagination off",
           "-ex", "set architecture i386:x86-64"]
    if file is not None:
        cmd += [str(file)]
    cmd += ["-ex", f"target remote 127.0.0.1:{port}"]
    for c in commands:
        cmd += ["-ex", c]
    res = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    return (res.stdout + res.stderr).decode(errors="replace")


class RawClient:
    """A hand-driven remote-protocol client (no-ack mode not used)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = rsp.PacketReader()
        self.items: list[rsp.Item] = []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_item(self, timeout: float = 30) -> rsp.Item | None:
        end = time.monotonic() + timeout
        while not self.items:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                return None
            self.items += self.reader.feed(data)
        return self.items.pop(0)

    def reply(self, timeout: float = 30) -> bytes | None:
        """The next packet (acks skipped; console ``O`` packets skipped)."""
        while True:
            item = self.next_item(timeout)
            if item is None:
                return None
            if item.kind == "packet":
                self.send_raw(b"+")
                return item.data
            if item.kind == "nak":
                return b"-"

    def ask(self, payload: bytes) -> bytes | None:
        self.send_raw(rsp.frame(payload))
        return self.reply()

    def close(self) -> None:
        self.sock.close()
