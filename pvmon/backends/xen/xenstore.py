"""A small xenstore daemon serving one domU over its xenstore ring
(xen/include/public/io/xs_wire.h; docs/misc/xenstore.txt for semantics).

Enough of the protocol for Linux's xenbus: read, write, mkdir, rm, directory,
get_perms, watches (fired once on registration, then on writes below them),
transactions (applied directly: one client, no conflicts), get_domain_path.
"""

from __future__ import annotations

import struct

from pvmon.backends.xen import abi
from pvmon.backends.xen.ring import ring_read as _ring_read
from pvmon.backends.xen.ring import ring_write as _ring_write

_R = abi.XENSTORE
_RING = abi.XENSTORE_RING_SIZE


class XenStore:
    """Store tree plus the ring protocol for the domain ``domid``."""

    def __init__(self, mem, ring_ma: int, domid: int, name: str, memory_kib: int) -> None:
        self.mem = mem
        self.ma = ring_ma
        self.domid = domid
        self.home = f"/local/domain/{domid}"
        self.tree: dict[str, bytes] = {}
        self.watches: list[tuple[str, str]] = []
        self._pending = bytearray()
        self._next_tx = 1
        self.requests = 0
        h = self.home
        for path, value in {
            "/local": "", "/local/domain": "", h: "", f"{h}/name": name,
            f"{h}/domid": str(domid), f"{h}/vm": f"/vm/{domid}",
            f"{h}/memory": "", f"{h}/memory/target": str(memory_kib),
            f"{h}/memory/static-max": str(memory_kib), f"{h}/control": "",
            f"{h}/control/platform-feature-multiprocessor-suspend": "1",
            f"{h}/control/platform-feature-xs_reset_watches": "1",
            f"{h}/cpu": "", f"{h}/cpu/0": "", f"{h}/cpu/0/availability": "online",
            f"{h}/device": "", f"{h}/data": "", f"{h}/console": "",
            f"{h}/console/type": "xenconsoled", f"{h}/console/limit": "1048576",
            "/vm": "", f"/vm/{domid}": "", f"/vm/{domid}/name": name,
        }.items():
            self.tree[path] = value.encode()

    def _abs(self, path: str) -> str:
        path = path.rstrip("\0")
        if not path.startswith("/"):
            path = f"{self.home}/{path}" if path else self.home
        return path.rstrip("/") or "/"

    # --------------------------------------------------------------- ring
    def process(self) -> bool:
        """Handle every complete request in the ring. Returns True when a
        response (or watch event) was written, i.e. the guest must be notified."""
        m = self.mem
        cons, prod = struct.unpack_from("<II", m.read_phys(self.ma + _R["req_cons"], 8))
        n = (prod - cons) & 0xFFFFFFFF
        if n > _RING:
            n = 0
            cons = prod
        self._pending += _ring_read(m, self.ma + _R["req"], _RING, cons, n)
        m.write_phys_data(self.ma + _R["req_cons"], struct.pack("<I", prod))
        wrote = False
        while len(self._pending) >= 16:
            typ, req_id, tx_id, ln = struct.unpack_from("<IIII", self._pending)
            if ln > abi.XENSTORE_PAYLOAD_MAX:
                self._pending.clear()
                wrote |= self._reply(abi.XS["ERROR"], req_id, tx_id, b"E2BIG\0")
                break
            if len(self._pending) < 16 + ln:
                break
            payload = bytes(self._pending[16:16 + ln])
            del self._pending[:16 + ln]
            self.requests += 1
            wrote |= self._handle(typ, req_id, tx_id, payload)
        return wrote

    def _reply(self, typ: int, req_id: int, tx_id: int, body: bytes) -> bool:
        msg = struct.pack("<IIII", typ, req_id, tx_id, len(body)) + body
        m = self.mem
        cons, prod = struct.unpack_from("<II", m.read_phys(self.ma + _R["rsp_cons"], 8))
        if _RING - ((prod - cons) & 0xFFFFFFFF) < len(msg):
            return False   # guest is not draining; drop rather than overrun
        _ring_write(m, self.ma + _R["rsp"], _RING, prod, msg)
        m.write_phys_data(self.ma + _R["rsp_prod"],
                          struct.pack("<I", (prod + len(msg)) & 0xFFFFFFFF))
        return True

    def _error(self, req_id: int, tx_id: int, err: str) -> bool:
        return self._reply(abi.XS["ERROR"], req_id, tx_id, err.encode() + b"\0")

    def _fire(self, path: str) -> bool:
        wrote = False
        for wpath, token in self.watches:
            if path == wpath or path.startswith(wpath.rstrip("/") + "/"):
                rel = path if wpath.startswith("/") else path[len(self.home) + 1:]
                body = rel.encode() + b"\0" + token.encode() + b"\0"
                wrote |= self._reply(abi.XS["WATCH_EVENT"], 0, 0, body)
        return wrote

    def _handle(self, typ: int, req_id: int, tx_id: int, payload: bytes) -> bool:
        parts = payload.split(b"\0")
        name = abi.XS_TYPES.get(typ)
        ok = b"OK\0"
        if name in ("READ", "DIRECTORY", "GET_PERMS", "MKDIR", "RM", "WRITE", "SET_PERMS",
                    "DIRECTORY_PART"):
            path = self._abs(parts[0].decode(errors="replace"))
        if name == "READ":
            if path not in self.tree:
                return self._error(req_id, tx_id, "ENOENT")
            return self._reply(typ, req_id, tx_id, self.tree[path])
        if name in ("DIRECTORY", "DIRECTORY_PART"):
            if path not in self.tree:
                return self._error(req_id, tx_id, "ENOENT")
            pre = path.rstrip("/") + "/"
            kids = sorted({p[len(pre):].split("/")[0] for p in self.tree
                           if p.startswith(pre) and len(p) > len(pre)})
            body = b"".join(k.encode() + b"\0" for k in kids)
            if name == "DIRECTORY_PART":
                body = b"0\0" + body + b"\0"
            return self._reply(typ, req_id, tx_id, body)
        if name == "GET_PERMS":
            if path not in self.tree:
                return self._error(req_id, tx_id, "ENOENT")
            return self._reply(typ, req_id, tx_id, f"n{self.domid}\0".encode())
        if name in ("WRITE", "MKDIR"):
            value = payload[len(parts[0]) + 1:] if name == "WRITE" else b""
            if name == "MKDIR" and path in self.tree:
                return self._reply(typ, req_id, tx_id, ok)
            segs = path.split("/")
            for i in range(2, len(segs)):
                self.tree.setdefault("/".join(segs[:i]), b"")
            self.tree[path] = value
            return self._reply(typ, req_id, tx_id, ok) | self._fire(path)
        if name == "RM":
            gone = [p for p in self.tree if p == path or p.startswith(path + "/")]
            for p in gone:
                del self.tree[p]
            return self._reply(typ, req_id, tx_id, ok) | self._fire(path)
        if name == "SET_PERMS":
            return self._reply(typ, req_id, tx_id, ok)
        if name == "WATCH":
            wpath = parts[0].decode(errors="replace")
            token = parts[1].decode(errors="replace") if len(parts) > 1 else ""
            full = self._abs(wpath)
            self.watches.append((full, token))
            wrote = self._reply(typ, req_id, tx_id, ok)
            body = wpath.encode() + b"\0" + token.encode() + b"\0"
            return wrote | self._reply(abi.XS["WATCH_EVENT"], 0, 0, body)
        if name == "UNWATCH":
            wpath = self._abs(parts[0].decode(errors="replace"))
            token = parts[1].decode(errors="replace") if len(parts) > 1 else ""
            self.watches = [w for w in self.watches if w != (wpath, token)]
            return self._reply(typ, req_id, tx_id, ok)
        if name == "TRANSACTION_START":
            tx = self._next_tx
            self._next_tx += 1
            return self._reply(typ, req_id, tx_id, f"{tx}\0".encode())
        if name == "TRANSACTION_END":
            return self._reply(typ, req_id, tx_id, ok)
        if name == "GET_DOMAIN_PATH":
            return self._reply(typ, req_id, tx_id, f"/local/domain/{parts[0].decode()}\0".encode())
        if name == "RESET_WATCHES":
            self.watches.clear()
            return self._reply(typ, req_id, tx_id, ok)
        if name == "IS_DOMAIN_INTRODUCED":
            return self._reply(typ, req_id, tx_id, b"T\0")
        return self._error(req_id, tx_id, "ENOSYS")

