"""``reverse``: every line back, reversed.  A complete third-party tcpfiles behaviour.

This one module is the whole plugin: tcpfiles finds the module-level ``reverse`` object with
``getPlugins`` because the file lives in a ``tcpfiles/plugins`` directory on ``sys.path``.
Connection limits, the idle timeout and draining on shutdown are tcpfiles' own: it applies
``--reverse-max-per-peer``, ``--reverse-idle-timeout`` and the rest (``ConnectionOptions``) to
the factory ``build`` returns, and calls ``drain()`` on shutdown.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import interfaces
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python import usage
from zope.interface import implementer

from tcpfiles.core.plugin import Behaviour, ConnectionOptions, Context


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
        """Lines may be as long as the option says."""
        self.MAX_LENGTH = self.factory.max_line

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
        """Shutting down (tcpfiles calls this): close after what is buffered."""
        self.transport.loseConnection()


class ReverseFactory(Factory[ReverseProtocol]):
    """One reverser per connection."""

    protocol = ReverseProtocol

    def __init__(self, options: usage.Options) -> None:
        self.max_line = options["max-line"]


class ReverseOptions(ConnectionOptions):
    """Settings, given to twistd as --reverse-max-line; ConnectionOptions adds
    --reverse-idle-timeout, --reverse-max-per-peer and --reverse-max-connections."""

    optParameters = [["max-line", None, 1024, "Longest line, in bytes.", int]]


def _build(options: usage.Options, context: Context) -> ReverseFactory:
    return ReverseFactory(options)


reverse = Behaviour(
    "reverse", "returns each line reversed (an example plugin)", "tcp:7779", ReverseOptions, _build
)
