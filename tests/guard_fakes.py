"""Protocols and factories with and without the optional hooks, for the guard's tests."""

from __future__ import annotations

from typing import Any

from twisted.internet import interfaces, task
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from tcpfiles.core.guard import GuardedFactory
from tcpfiles.testing import connect, guarded

__all__ = ["Busy", "Plain", "Polite", "Stubborn", "connect", "guard"]


class Plain(Protocol):
    """What ``Factory.forProtocol`` gives: no hooks at all."""

    transport: Any

    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


@implementer(interfaces.IHalfCloseableProtocol)
class Polite(Plain):
    """Every optional hook: drain, timed_out, half-close; records what it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def drain(self) -> None:
        self.asked.append("drain")
        self.transport.write(b"bye: shutting down\n")
        self.transport.loseConnection()

    def timed_out(self) -> None:
        self.asked.append("timed_out")
        self.transport.write(b"bye: idle\n")
        self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        self.asked.append("readConnectionLost")

    def writeConnectionLost(self) -> None:
        self.asked.append("writeConnectionLost")


class Stubborn(Plain):
    """Says goodbye when timed out but never closes (a peer that does not read, in effect)."""

    def timed_out(self) -> None:
        self.transport.write(b"bye\n")


class Busy(Factory[Plain]):
    """A factory with words for a refusal."""

    protocol = Plain

    def refusal_message(self, reason: str) -> bytes:
        return f"busy: {reason}\n".encode()


def guard(factory: Any = None, clock: task.Clock | None = None, **settings: Any) -> GuardedFactory:
    """``factory`` (a plain one of :class:`Plain` by default) under the guard, on a new Clock."""
    return guarded(
        factory if factory is not None else Factory.forProtocol(Plain),
        clock or task.Clock(),
        **settings,
    )
