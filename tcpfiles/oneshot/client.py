"""The oneshot client: send a name, receive the file (or the one-byte answer that it is missing)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from tcpfiles.core.tls import can_half_close
from tcpfiles.oneshot.protocol import MISSING
from tcpfiles.tree.partfile import part_file

__all__ = ["MissingFile", "NothingReceived", "fetch_oneshot"]


class MissingFile(Exception):
    """The one-shot server answered ``1``: it has no such file."""


class NothingReceived(Exception):
    """The server closed without sending a byte: not a file, and not the protocol's ``1``."""


class _Receiver(Protocol):
    """Send the name, half-close, write everything that comes back to ``out``."""

    transport: Any

    def __init__(self, name: bytes, out: Any) -> None:
        self.name = name
        self.out = out
        self.size = 0
        self.first = b""
        self.done: defer.Deferred[int] = defer.Deferred()

    def connectionMade(self) -> None:
        if can_half_close(self.transport):
            self.transport.write(self.name)
            self.transport.loseWriteConnection()  # the whole name; fine for old servers
        else:  # TLS cannot half-close: end the name with a newline instead
            self.transport.write(self.name + b"\n")

    def dataReceived(self, data: bytes) -> None:
        if self.size == 0:
            self.first = data[:1]
        self.size += len(data)
        self.out.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(self.size)


@defer.inlineCallbacks
def fetch_oneshot(endpoint: Any, name: str, destination: str) -> Any:
    """Download ``name`` from a one-shot server into ``destination`` (via ``.part``).

    Fails with :class:`MissingFile` when the server answers ``1``, and with
    :class:`NothingReceived` when it sends nothing at all (a server of another kind, or one that
    dropped the connection): in both cases ``destination`` is left as it was.  Fires with the size.
    """
    with part_file(destination) as out:
        receiver = _Receiver(name.encode("utf-8"), out)
        yield connectProtocol(endpoint, receiver)
        size = yield receiver.done
        if size == 1 and receiver.first == MISSING:
            raise MissingFile(f"the server has no file {name!r}")
        if size == 0:
            raise NothingReceived(
                "the server closed without sending anything (is it a one-shot server?)"
            )
    return size
