"""``echo`` and ``upper``: every byte back (RFC 862), or ASCII upper-cased like the tutorial.

Backpressure: the transport is registered as its own push producer, so when a client sends but
does not read, the write buffer fills, Twisted pauses the transport, and the server stops reading
from that client.  Memory per connection stays near one read plus one write buffer, whatever the
client sends.  A client that half-closes gets everything echoed, then the connection closes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import interfaces
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpfiles.core.connections import LimitedFactory
from tcpfiles.core.sending import adapt_read_size, send_now


@implementer(interfaces.IHalfCloseableProtocol)
class EchoProtocol(Protocol):
    """Send back what arrives, through :meth:`transform`."""

    transport: Any
    factory: EchoFactory

    def __init__(self) -> None:
        self._idle: interfaces.IDelayedCall | None = None

    def transform(self, data: bytes) -> bytes:
        """What to send back for ``data``: the bytes themselves."""
        return data

    def connectionMade(self) -> None:
        """Count the connection; reading pauses whenever our output is not being read."""
        self.factory.tracker.opened(self, self.transport.getPeer())
        self.transport.registerProducer(self.transport, True)
        self._idle = self.factory.clock.callLater(self.factory.idle_timeout, self._finish)

    def dataReceived(self, data: bytes) -> None:
        """Echo it."""
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.factory.idle_timeout)
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

    def _finish(self) -> None:
        if self.transport.producer is not None:
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Forget the connection."""
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self.factory.tracker.closed(self)


class UpperProtocol(EchoProtocol):
    """The tutorial's echo server: ASCII letters upper-cased, every other byte unchanged."""

    def transform(self, data: bytes) -> bytes:
        """``bytes.upper`` touches ASCII only."""
        return data.upper()


class EchoFactory(LimitedFactory):
    """Counts, limits and drains connections of an echo-like protocol."""

    def __init__(
        self, clock: interfaces.IReactorTime, protocol: type[EchoProtocol], options: usage.Options
    ) -> None:
        super().__init__(clock, options["max-per-peer"], options["max-connections"])
        self.protocol_class = protocol
        self.idle_timeout = options["idle-timeout"]

    def make_protocol(self, addr: interfaces.IAddress | None) -> Protocol:
        """A fresh echo protocol."""
        return self.protocol_class()


# --- client -------------------------------------------------------------------------------------
