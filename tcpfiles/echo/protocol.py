"""``echo`` and ``upper``: every byte back (RFC 862), or ASCII upper-cased like the tutorial.

Backpressure: the transport is registered as its own push producer, so when a client sends but
does not read, the write buffer fills, Twisted pauses the transport, and the server stops reading
from that client.  Memory per connection stays near one read plus one write buffer, whatever the
client sends.  A client that half-closes gets everything echoed, then the connection closes.
Limits, the idle timeout and draining are the kernel's (:mod:`tcpfiles.core.guard`); the idle
timeout and draining call :meth:`EchoProtocol.timed_out` and :meth:`EchoProtocol.drain`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import interfaces
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from tcpfiles.core.sending import adapt_read_size, send_now

__all__ = ["EchoFactory", "EchoProtocol", "UpperProtocol"]


@implementer(interfaces.IHalfCloseableProtocol)
class EchoProtocol(Protocol):
    """Send back what arrives, through :meth:`transform`."""

    transport: Any
    factory: EchoFactory

    def transform(self, data: bytes) -> bytes:
        """What to send back for ``data``: the bytes themselves."""
        return data

    def connectionMade(self) -> None:
        """Reading pauses whenever our output is not being read."""
        self.transport.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        """Echo it."""
        adapt_read_size(self.transport, len(data))
        send_now(self.transport, self.transform(data))

    def readConnectionLost(self) -> None:
        """The client is done sending: close once everything is echoed."""
        self._finish()

    def writeConnectionLost(self) -> None:
        """The client stopped reading: nothing left to do."""
        self.transport.abortConnection()

    def drain(self) -> None:
        """Shutting down: flush what is buffered, then close."""
        self._finish()

    def timed_out(self) -> None:
        """Idle (the kernel's timeout): flush what is buffered, then close."""
        self._finish()

    def _finish(self) -> None:
        if self.transport.producer is not None:
            self.transport.unregisterProducer()
        self.transport.loseConnection()


class UpperProtocol(EchoProtocol):
    """The tutorial's echo server: ASCII letters upper-cased, every other byte unchanged."""

    def transform(self, data: bytes) -> bytes:
        """``bytes.upper`` touches ASCII only."""
        return data.upper()


class EchoFactory(Factory[EchoProtocol]):
    """Makes an echo-like protocol per connection."""

    def __init__(self, protocol: type[EchoProtocol]) -> None:
        self.protocol = protocol


# --- client -------------------------------------------------------------------------------------
