"""A small TCP proxy to cut and restore the network between two processes (fault tests).

    with TcpProxy("127.0.0.1", broker.port) as proxy:   # the agent connects to proxy.port
        proxy.cut("reset")       # every connection reset, new ones refused (a dead link)
        proxy.cut("blackhole")   # bytes stop flowing both ways, nothing is closed (Wi-Fi gone)
        proxy.restore()

`reset` is what a broker host crash or a NAT timeout looks like: the peer notices at once.
`blackhole` is a lost radio link: nobody notices until a keepalive times out; bytes written
meanwhile stay queued and flow again on `restore()` unless an end gave up on the
connection first (as TCP would, no byte is ever lost or invented inside a connection).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
from types import TracebackType
from typing import Literal

log = logging.getLogger(__name__)

CutMode = Literal["reset", "blackhole"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", listen_port))
        self._server.listen(64)
        self.host = "127.0.0.1"
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._refusing = False
        self._closed = False
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self.connections = 0
        self.cuts = 0

    # ------------------------------------------------------------------ control

    def start(self) -> TcpProxy:
        thread = threading.Thread(target=self._accept, name="tcpproxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def cut(self, mode: CutMode = "reset") -> None:
        self.cuts += 1
        if mode == "blackhole":
            self._flowing.clear()
            return
        with self._lock:
            self._refusing = True
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            _reset(a)
            _reset(b)

    def restore(self) -> None:
        with self._lock:
            self._refusing = False
        self._flowing.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pairs, self._pairs = self._pairs, []
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._server.close()
        for a, b in pairs:
            _reset(a)
            _reset(b)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ threads

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            with self._lock:
                refuse = self._refusing or self._closed
            if refuse:
                _reset(client)
                continue
            threading.Thread(
                target=self._open, args=(client,), name="tcpproxy-open", daemon=True
            ).start()

    def _open(self, client: socket.socket) -> None:
        self._flowing.wait()  # a blackholed link: the connection attempt just hangs
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        with self._lock:
            if self._refusing or self._closed:
                _reset(client)
                _reset(upstream)
                return
            self._pairs.append((client, upstream))
            self.connections += 1
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(
                target=self._pump, args=(src, dst), name="tcpproxy-pump", daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                self._flowing.wait()
                readable, _, _ = select.select([src], [], [], 0.2)
                if not readable:
                    continue
                if not self._flowing.is_set():
                    continue  # cut while waiting: leave the bytes queued
                data = src.recv(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except (OSError, ValueError):
            _reset(src)
            _reset(dst)
        finally:
            with self._lock:
                self._pairs = [p for p in self._pairs if src not in p]


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a dead link or a crashed peer looks."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
