"""Who is connected: per-peer and total limits, and draining for a graceful shutdown.

Twisted's ``policies.LimitConnectionsByPeer`` is broken on current Twisted (it indexes an
``IPv4Address``), so the counting is done here.  The kernel's guard
(:class:`tcpfiles.core.guard.GuardedFactory`) owns one :class:`ConnectionTracker` per behaviour
and reports each connection's :meth:`~ConnectionTracker.opened` and
:meth:`~ConnectionTracker.closed`; behaviours never call them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import defer, interfaces
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

__all__ = [
    "REFUSALS",
    "ConnectionTracker",
    "Drainable",
    "RefusedProtocol",
    "describe_peer",
    "peer_key",
]

log = Logger(namespace="tcpfiles.core.connections")

#: Why a connection is refused, as :attr:`ConnectionTracker.refused` counts it.
REFUSALS = ("draining", "max-connections", "max-per-peer")


class Drainable(TypingProtocol):
    """A connection that can be asked to finish its current work and close."""

    transport: interfaces.ITransport

    def drain(self) -> None:
        """Close when the current request is done (at once when idle)."""


def peer_key(address: object) -> str:
    """The address a per-peer limit counts by: the host for IP, one key for everything else."""
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else type(address).__name__


def describe_peer(address: object) -> str:
    """``127.0.0.1:4000``, ``[::1]:4000``, or a UNIX socket's name, for logs; a client that
    came through a balancer (PROXY protocol) with it: ``1.2.3.4:5555 via=127.0.0.1:40000``."""
    via = getattr(address, "via", None)
    if via is not None:
        return f"{_describe(address)} via={_describe(via)}"
    return _describe(address)


def _describe(address: object) -> str:
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is None:
        name = getattr(address, "name", None)
        if isinstance(name, bytes):
            name = name.decode("utf-8", "backslashreplace")
        if name:
            return f"unix:{name}"
        # A UNIX-socket client is usually unnamed: say what it is, not "UnixAddress".
        return "unix:(unnamed)" if hasattr(address, "name") else "?"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class ConnectionTracker:
    """Count connections by peer and in total, refuse past the limits, and drain on shutdown."""

    def __init__(self, max_per_peer: int = 64, max_total: int = 1024) -> None:
        self.max_per_peer = max_per_peer
        self.max_total = max_total
        self.active: dict[Drainable, str] = {}
        self._per_peer: Counter[str] = Counter()
        #: For the metrics (read when scraped, so counting costs an addition): connections
        #: accepted so far, and refused by reason (one of :data:`REFUSALS`).
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self.draining = False
        self._idle_waiters: list[defer.Deferred[None]] = []

    def refusal(self, address: object) -> str | None:
        """Why a new connection from ``address`` must be refused, or None to accept it (a
        refusal is counted in :attr:`refused`: ask only for a connection that is made)."""
        if self.draining:
            self.refused["draining"] += 1
            return "the server is shutting down"
        if len(self.active) >= self.max_total:
            self.refused["max-connections"] += 1
            return f"too many connections ({self.max_total} in total)"
        if self._per_peer[peer_key(address)] >= self.max_per_peer:
            self.refused["max-per-peer"] += 1
            return f"too many connections from your address (limit {self.max_per_peer})"
        return None

    def opened(self, connection: Drainable, address: object) -> None:
        """Count a connection that has been made."""
        key = peer_key(address)
        self.accepted += 1
        self.active[connection] = key
        self._per_peer[key] += 1
        if self.draining:
            connection.drain()

    def closed(self, connection: Drainable) -> None:
        """Forget a connection that has been lost."""
        key = self.active.pop(connection, None)
        if key is None:
            return
        self._per_peer[key] -= 1
        if not self._per_peer[key]:
            del self._per_peer[key]
        if not self.active:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def drain(self) -> defer.Deferred[None]:
        """Ask every connection to finish and close; fires when none is left."""
        self.draining = True
        for connection in list(self.active):
            connection.drain()
        if not self.active:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def abort_all(self) -> None:
        """Drop whatever is still connected, without waiting for buffers."""
        for connection in list(self.active):
            connection.transport.abortConnection()  # type: ignore[attr-defined]


class RefusedProtocol(Protocol):
    """Given to a connection over the limits: says why (if the behaviour has words), closes."""

    transport: Any

    def __init__(self, reason: str, message: bytes) -> None:
        self.reason = reason
        self.message = message

    def connectionMade(self) -> None:
        """Log, say why, and close."""
        log.info(
            "refused {peer}: {reason}",
            peer=describe_peer(self.transport.getPeer()),
            reason=self.reason,
        )
        if self.message:
            self.transport.write(self.message)
        self.transport.loseConnection()
