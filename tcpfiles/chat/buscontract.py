"""What a chat bus is, for :mod:`tcpfiles.chat.bus`'s relay: the :class:`Bus` a room's
processes share (Redis in :mod:`tcpfiles.chat.redisbus`, an in-memory fake in the tests), what
it tells the relay (:class:`BusListener`), its URL, and the order of stream ids."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from twisted.internet import defer

__all__ = ["Bus", "BusListener", "node_id", "parse_url", "stream_order"]


def node_id() -> str:
    """This process's name on the bus: host, pid and a random part (unique per start)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def stream_order(entry_id: str) -> tuple[int, int]:
    """A stream id (``"1700000000000-3"``) as something that sorts."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def parse_url(url: str) -> tuple[str, int, int, str | None]:
    """``redis://[:PASSWORD@]HOST[:PORT][/DB]`` as (host, port, db, password); ValueError."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"{url!r}: only redis://HOST[:PORT][/DB] is supported")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"{url!r}: the database is a number (/0)")
    password = unquote(parts.password) if parts.password else None
    return parts.hostname, parts.port or 6379, int(db), password


class BusListener(Protocol):
    """What a bus tells (the relay)."""

    def bus_up(self) -> None:
        """Connected and subscribed: commands may be sent."""

    def bus_down(self, why: str) -> None:
        """The connection is lost (or could not be made); the bus keeps trying."""

    def bus_message(self, payload: str) -> None:
        """One message from the channel."""


class Bus(Protocol):
    """The shared store and channel of a room (every Deferred fails when the bus is down, and
    within a few seconds when it does not answer: the bus then tells it is down)."""

    where: str  # for the log: redis://host:port/db

    def start(self, listener: BusListener) -> None:
        """Connect (and keep reconnecting, with back-off) and subscribe."""

    def stop(self) -> defer.Deferred[Any]:
        """Disconnect for good."""

    def claim(self, key: str, node: str, ttl: float) -> defer.Deferred[bool]:
        """``SET key node NX EX ttl``: whether it was set."""

    def reclaim(self, key: str, node: str, ttl: float) -> defer.Deferred[bool]:
        """Set ``key`` to ``node`` (TTL ``ttl``) if it is free or already ``node``'s."""

    def release(self, key: str, node: str) -> defer.Deferred[Any]:
        """Delete ``key`` if it is ``node``'s."""

    def post(self, stream: str, maxlen: int, payloads: list[str]) -> defer.Deferred[Any]:
        """Append each of ``payloads`` to ``stream`` (capped near ``maxlen``) and publish them
        as one message on the channel, ``"ID1,ID2,...\\nPAYLOAD1\\nPAYLOAD2..."``, in one
        step."""

    def publish(self, payload: str) -> defer.Deferred[Any]:
        """Publish ``"-\\nPAYLOAD"`` on the channel (no stream id)."""

    def recent(self, stream: str, count: int) -> defer.Deferred[list[tuple[str, str]]]:
        """The last ``count`` entries of ``stream``, oldest first: (id, payload)."""

    def since(self, stream: str, after: str) -> defer.Deferred[list[tuple[str, str]]]:
        """The entries of ``stream`` after id ``after``, oldest first."""
