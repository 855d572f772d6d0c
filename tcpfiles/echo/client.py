"""The echo client: a terminal (or any stdio) bridged to an echo server."""

from __future__ import annotations

from typing import Any

from twisted.internet import interfaces
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpfiles.core.tls import can_half_close

__all__ = ["EchoBridge", "run_echo_client"]


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
