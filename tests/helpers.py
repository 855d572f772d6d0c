"""Helpers for driving any tcpfiles protocol in memory."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from tcpfiles.core.guard import ConnectionSettings, GuardedFactory


def connect(factory, host: str = "192.0.2.7", port: int = 40000):
    """A protocol built by the factory for a peer, on a StringTransport, connected."""
    address = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def guarded(factory, clock=None, **settings) -> GuardedFactory:
    """``factory`` under the kernel's guard, as twistd listens with it; ``settings`` are
    :class:`ConnectionSettings` fields (``idle_timeout=10``), the clock the factory's own."""
    clock = clock or getattr(factory, "clock", None) or task.Clock()
    return GuardedFactory(factory, clock, ConnectionSettings(**settings))


def pump(transport: StringTransport, limit: int = 10_000) -> None:
    """Act as a socket that drains at once: ask a registered pull producer until it is done."""
    for _ in range(limit):
        if transport.producer is None or transport.disconnecting:
            return
        transport.producer.resumeProducing()
    raise AssertionError("producer never finished")


class PausingTransport(StringTransport):
    """Like Twisted's transports: pauses a push producer once it holds more than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and self.streaming and len(self.value()) > self.limit:
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()
