"""``reverse``: every line back, reversed.  A complete third-party tcpfiles behaviour.

This one module is the whole plugin: tcpfiles finds the module-level ``reverse`` object with
``getPlugins`` because the file lives in a ``tcpfiles/plugins`` directory on ``sys.path``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import interfaces
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpfiles.core.plugin import Behaviour, ConnectionOptions, Context
from tcpfiles.core.connections import LimitedFactory


@implementer(interfaces.IHalfCloseableProtocol)
class ReverseProtocol(LineOnlyReceiver):
    """Reverse each UTF-8 line (by characters, not bytes).

    Half-closeable, so that ``printf 'abc\n' | nc -N host 7779`` still gets its answer: without
    it Twisted treats the client's end of input as a lost connection and drops what is queued.
    """

    delimiter = b"\n"
    factory: ReverseFactory
    transport: Any

    def connectionMade(self) -> None:
        """Be counted (limits, and draining on shutdown)."""
        self.MAX_LENGTH = self.factory.max_line
        self.factory.tracker.opened(self, self.transport.getPeer())

    def lineReceived(self, line: bytes) -> None:
        """Send it back reversed."""
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        self.sendLine(text[::-1].encode("utf-8"))

    def lineLengthExceeded(self, line: bytes) -> None:
        """Say so, and close."""
        self.transport.write(b"line too long\n")
        self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        """The client has sent everything: close once the answers are out."""
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """The client stopped reading."""
        self.transport.abortConnection()

    def drain(self) -> None:
        """Shutting down: close after what is buffered."""
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """No longer counted."""
        self.factory.tracker.closed(self)


class ReverseFactory(LimitedFactory):
    """Connections are limited per peer and in total by tcpfiles' tracker."""

    def __init__(self, clock: interfaces.IReactorTime, options: usage.Options) -> None:
        super().__init__(clock, options["max-per-peer"], options["max-connections"])
        self.max_line = options["max-line"]

    def make_protocol(self, addr: interfaces.IAddress | None) -> Protocol:
        """One reverser per connection."""
        return ReverseProtocol()


class ReverseOptions(ConnectionOptions):
    """Settings, given to twistd as --reverse-max-line and so on."""

    optParameters = [["max-line", None, 1024, "Longest line, in bytes.", int]]


def _build(options: usage.Options, context: Context) -> ReverseFactory:
    return ReverseFactory(context.reactor, options)


reverse = Behaviour(
    "reverse", "returns each line reversed (an example plugin)", "tcp:7779", ReverseOptions, _build
)
