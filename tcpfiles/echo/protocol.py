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
from tcpfiles.core.plugin import Behaviour, ConnectionOptions, Context
from tcpfiles.core.sending import adapt_read_size, send_now
from tcpfiles.core.tls import can_half_close


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


class EchoOptions(ConnectionOptions):
    """Options of ``echo`` and ``upper``."""


def _builder(protocol: type[EchoProtocol]) -> Any:
    def build(options: usage.Options, context: Context) -> EchoFactory:
        return EchoFactory(context.reactor, protocol, options)

    return build


echo = Behaviour(
    "echo",
    "returns every byte unchanged (RFC 862), with backpressure",
    "tcp:7777",
    EchoOptions,
    _builder(EchoProtocol),
)
upper = Behaviour(
    "upper",
    "echo that upper-cases ASCII, like the socket tutorial's server",
    "tcp:7778",
    EchoOptions,
    _builder(UpperProtocol),
)


# --- client -------------------------------------------------------------------------------------


@implementer(interfaces.IHalfCloseableProtocol)
class _StdinSide(Protocol):
    """stdin -> socket; stdin's end half-closes the socket (so the server knows we are done)."""

    transport: Any

    def __init__(self, bridge: EchoBridge) -> None:
        self.bridge = bridge

    def dataReceived(self, data: bytes) -> None:
        self.bridge.sent += len(data)
        self.bridge.socket.transport.write(data)

    def readConnectionLost(self) -> None:
        self.bridge.input_ended()

    def writeConnectionLost(self) -> None:
        """stdout went away: nothing to print to."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.bridge.finished()


class _SocketSide(Protocol):
    """socket -> stdout; the server closing ends the session."""

    transport: Any

    def __init__(self, bridge: EchoBridge) -> None:
        self.bridge = bridge

    def dataReceived(self, data: bytes) -> None:
        self.bridge.received += len(data)
        self.bridge.stdio.transport.write(data)
        if self.bridge.eof and self.bridge.received >= self.bridge.sent:
            self.transport.loseConnection()  # everything came back (TLS: no half-close)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.bridge.stdio.transport.loseConnection()  # flush stdout, then _StdinSide is lost


class EchoBridge:
    """Joins a terminal (or pipe) to an echo-like server until the server closes."""

    def __init__(self) -> None:
        self.socket = _SocketSide(self)
        self.stdio = _StdinSide(self)
        self.done: Any = None
        self.sent = 0
        self.received = 0
        self.eof = False

    def input_ended(self) -> None:
        """stdin is done: tell the server (half-close), or, where the transport cannot
        half-close (TLS), close once every byte has come back."""
        self.eof = True
        transport = self.socket.transport
        if can_half_close(transport):
            transport.loseWriteConnection()
        elif self.received >= self.sent:
            transport.loseConnection()

    def finished(self) -> None:
        if self.done is not None and not self.done.called:
            self.done.callback(None)


def run_echo_client(endpoint: Any, stdio: Any) -> Any:
    """Connect, then pump stdin to the server and its answers to stdout; fires when done.

    ``stdio`` makes the standard-I/O transport for a protocol (``twisted.internet.stdio.
    StandardIO``, or a fake in tests).
    """
    from twisted.internet import defer
    from twisted.internet.endpoints import connectProtocol

    bridge = EchoBridge()
    bridge.done = defer.Deferred()

    def connected(_: object) -> Any:
        stdio(bridge.stdio)
        return bridge.done

    d = connectProtocol(endpoint, bridge.socket)
    return d.addCallback(connected)
