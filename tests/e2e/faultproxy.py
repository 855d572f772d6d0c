"""A userland fault proxy for end-to-end tests: loopback TCP that can throttle, cut and stall.

Plain threads and sockets, no reactor, no root.  ``relayed`` counts bytes per direction and
:meth:`FaultProxy.wait_relayed` blocks until a count is reached (the event tests synchronise on).
Throttling sleeps between chunks: that paces the data, it is not used to wait for anything.
"""

from __future__ import annotations

import socket
import threading
import time


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.stalled = False
        self.closed = False


class FaultProxy:
    """Listen on 127.0.0.1:0 and relay each connection to 127.0.0.1:``upstream_port``."""

    def __init__(self, upstream_port: int, rate: float | None = None) -> None:
        self.upstream_port = upstream_port
        self.rate = rate  # bytes per second, each direction of each connection
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.relayed = {"down": 0, "up": 0}  # down: server -> client
        self.changed = threading.Condition()
        self.links: list[_Link] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:  # the server is down: the client sees its connection close
                client.close()
                continue
            link = _Link(client, upstream)
            with self.changed:
                self.links.append(link)
            threading.Thread(
                target=self._pump, args=(link, upstream, client, "down"), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(link, client, upstream, "up"), daemon=True
            ).start()

    def _pump(
        self, link: _Link, source: socket.socket, sink: socket.socket, direction: str
    ) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    if not link.closed:
                        sink.shutdown(socket.SHUT_WR)  # pass the half-close on
                    return
                with self.changed:
                    while link.stalled and not link.closed:
                        self.changed.wait(0.1)
                if link.closed:
                    return
                sink.sendall(data)
                with self.changed:
                    self.relayed[direction] += len(data)
                    self.changed.notify_all()
                if self.rate:
                    time.sleep(len(data) / self.rate)
        except OSError:
            self._drop(link)

    def wait_relayed(self, direction: str, at_least: int, timeout: float = 60.0) -> None:
        """Block until ``at_least`` bytes went ``direction`` ("down" or "up")."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.relayed[direction] < at_least:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"only {self.relayed} relayed after {timeout} s")
                self.changed.wait(left)

    def _drop(self, link: _Link) -> None:
        with self.changed:
            link.closed = True
            self.changed.notify_all()
        for sock in (link.client, link.upstream):
            try:
                # shutdown, not just close: close() does not wake a thread blocked in recv()
                # on the same socket, and the connection would stay open until it returns.
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut(self) -> None:
        """Close every current connection mid-stream, both sides."""
        with self.changed:
            links = list(self.links)
        for link in links:
            self._drop(link)

    def stall(self) -> None:
        """Stop forwarding on every current connection (new ones flow normally)."""
        with self.changed:
            for link in self.links:
                link.stalled = True

    def close(self) -> None:
        """Stop accepting and drop everything."""
        self.closed = True
        self.listener.close()
        self.cut()
