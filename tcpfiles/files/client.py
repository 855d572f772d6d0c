"""A Deferred-returning client for the files protocol, for the CLI and any Twisted program.

::

    client = yield connect(reactor, "localhost:8888")
    entries = yield client.list("docs")
    size = yield client.get("docs/a.txt", sink=out.write)
    result = yield transfer.fetch(client, "docs/a.txt", "a.txt")   # resumable, verified

Requests may be issued without waiting: they are pipelined and answered in order.  A refusal
from the server fails the request's Deferred with :class:`RemoteError`; a lost connection fails
every outstanding request with :class:`ConnectionClosed`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, endpoints

from tcpfiles.files import wire
from tcpfiles.files.client_errors import (
    SILENT_CLOSE,
    ConnectionClosed,
    IntegrityError,
    RemoteError,
    TLSFailure,
    WrongServer,
)
from tcpfiles.files.client_protocol import FilesClientProtocol
from tcpfiles.files.endpoint import DEFAULT_PORT, client_endpoint
from tcpfiles.files.wire import RemoteEntry, RemoteInfo
from tcpfiles.tree.producer import FileBodyProducer

__all__ = [
    "DEFAULT_PORT",
    "SILENT_CLOSE",
    "ConnectionClosed",
    "FilesClient",
    "FilesClientProtocol",
    "IncompleteListing",
    "IntegrityError",
    "Listing",
    "RemoteEntry",
    "RemoteError",
    "RemoteInfo",
    "TLSFailure",
    "WrongServer",
    "client_endpoint",
    "connect",
]


class IncompleteListing(RemoteError):
    """A listing the server ended early (``END <n> truncated`` or ``END <n> failed``): taking
    it for the whole directory would be wrong (``get -r`` reports it as a refusal)."""

    def __init__(self, path: str, listing: Listing) -> None:
        assert listing.reason is not None
        why = {
            wire.LIST_TRUNCATED: "the server lists at most that many (its --max-list)",
            wire.LIST_FAILED: "the server could not read the rest of the directory",
        }.get(listing.reason, listing.reason)
        super().__init__(
            listing.reason, f"listing of {path or '/'} stopped after {len(listing)} entries: {why}"
        )
        self.listing = listing


class Listing(builtins.list[RemoteEntry]):
    """A remote directory's entries, sorted by name (the server sends them unsorted).

    ``reason`` is None for a whole listing; ``"truncated"`` (the server's ``--max-list`` was
    reached and more entries exist) or ``"failed"`` when the server ended it early.
    """

    def __init__(self, entries: builtins.list[RemoteEntry], reason: str | None = None) -> None:
        super().__init__(sorted(entries, key=lambda e: e.name))
        self.reason = reason

    @property
    def complete(self) -> bool:
        """True when the server listed the whole directory."""
        return self.reason is None


class FilesClient:
    """The requests of the files protocol as methods returning Deferreds."""

    def __init__(self, protocol: FilesClientProtocol) -> None:
        self.protocol = protocol

    def get(self, path: str, sink: Callable[[bytes], None], offset: int = 0) -> defer.Deferred[int]:
        """Stream a file (from ``offset``) into ``sink``; fires with the number of bytes."""
        return self.protocol.send(wire.Get(path, offset), sink).addCallback(wire.parse_count)

    def list(self, path: str = "") -> defer.Deferred[Listing]:
        """The entries of a remote directory (the root by default), sorted by name.

        Check :attr:`Listing.complete`: a server ends a listing longer than its ``--max-list``
        early (``END <n> truncated``).
        """

        def parsed(result: tuple[builtins.list[bytes], str | None]) -> Listing:
            lines, reason = result
            return Listing([wire.parse_list_row(line) for line in lines], reason)

        return self.protocol.send(wire.List(path)).addCallback(parsed)

    def stat(self, path: str) -> defer.Deferred[RemoteInfo]:
        """Type, size, mtime and (for a file) sha256."""
        return self.protocol.send(wire.Stat(path)).addCallback(wire.parse_stat)

    def login(self, user: str, password: str) -> defer.Deferred[str]:
        """Log in (servers with accounts); fires with the account name."""

        def welcomed(fields: tuple[str, ...]) -> str:
            name = wire.parse_welcome(fields)
            return user if name is None else name

        return self.protocol.send(wire.Login(user, password)).addCallback(welcomed)

    def mkdir(self, path: str) -> defer.Deferred[bool]:
        """Create a remote directory; fires True if created, False if it was there."""
        return self.protocol.send(wire.Mkdir(path)).addCallback(wire.parse_made)

    @defer.inlineCallbacks
    def put(
        self,
        path: str,
        fd: int,
        size: int,
        sha256: str,
        replace: bool = False,
        on_progress: Callable[[int], None] | None = None,
    ) -> Any:
        """Upload ``size`` bytes of ``fd`` (from offset 0) to ``path``; fires with the sha256.

        The server checks everything before it asks for the body (``OK send``); the body then
        streams with backpressure, and the server's final ``OK stored`` means the file is on disk
        under its name.
        """
        yield self.protocol.send(wire.Put(path, size, sha256, replace))
        stored = self.protocol.expect(wire.STATUS)
        if size:

            def progress(n: int) -> None:
                self.protocol.touch()
                if on_progress is not None:
                    on_progress(n)

            producer = FileBodyProducer(
                fd, 0, size, on_progress=progress, clock=self.protocol.clock
            )
            sent = producer.begin(self.protocol.transport)
            sent.addErrback(lambda _: None)  # a lost connection fails `stored` too
        digest = wire.parse_stored((yield stored))
        return sha256 if digest is None else digest

    def help(self) -> defer.Deferred[builtins.list[str]]:
        """The server's HELP text, one str per line."""
        return self.protocol.send(wire.Help()).addCallback(wire.parse_help)

    def quit(self) -> defer.Deferred[None]:
        """Say goodbye; the server closes the connection."""
        return self.protocol.send(wire.Quit()).addCallback(lambda _: None)

    def close(self) -> None:
        """Close the connection without QUIT."""
        self.protocol.transport.loseConnection()


def connect(
    reactor: Any,
    server: str,
    timeout: float | None = None,
    ca: str | None = None,
    insecure: bool = False,
) -> defer.Deferred[FilesClient]:
    """Connect to a files server: ``"localhost:8888"`` or any client endpoint string.

    With ``timeout``, a connection that makes no progress for that long while a request is
    outstanding is dropped (its requests fail with :class:`ConnectionClosed`).
    """
    endpoint = client_endpoint(reactor, server, ca=ca, insecure=insecure)
    d = endpoints.connectProtocol(endpoint, FilesClientProtocol(reactor, timeout))
    return d.addCallback(FilesClient)
