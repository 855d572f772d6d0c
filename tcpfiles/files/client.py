"""A Deferred-returning client for the files protocol, for the CLI and any Twisted program.

Everything a client program needs is importable from here::

    async def main(reactor):
        client = await connect(reactor, "localhost:8888")   # or any IStreamClientEndpoint
        for entry in await client.list("docs"):               # RemoteEntry: kind, size, name
            print(entry.kind, entry.name)
        await client.get("docs/a.txt", sink=out.write)        # the bytes into a callable
        await transfer.fetch(client, "docs/a.txt", "a.txt")   # resumable, verified
        await client.put("up/b.txt", "b.txt")                 # sha256 computed for you

    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))

Requests may be issued without waiting: they are pipelined and answered in order (an upload
holds back the requests issued after it until its body is out).  Every error is a
:class:`FilesError`: a refusal from the server fails the request's Deferred with
:class:`RemoteError`, a lost connection fails every outstanding request with
:class:`ConnectionClosed`, a connection that could not be made with :class:`CannotConnect`
(see :mod:`tcpfiles.files.client_errors` for the whole hierarchy).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer, error, interfaces
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from tcpfiles.files import wire
from tcpfiles.files.client_errors import (
    SILENT_CLOSE,
    CannotConnect,
    ConnectionClosed,
    FilesError,
    IntegrityError,
    ProtocolViolation,
    RemoteError,
    TLSFailure,
    WrongServer,
)
from tcpfiles.files.client_protocol import FilesClientProtocol
from tcpfiles.files.client_source import Source, digest_of, open_source
from tcpfiles.files.endpoint import DEFAULT_PORT, client_endpoint
from tcpfiles.files.wire import EntryKind, RemoteEntry, RemoteInfo

__all__ = [
    "DEFAULT_PORT",
    "SILENT_CLOSE",
    "CannotConnect",
    "ConnectionClosed",
    "EntryKind",
    "FilesClient",
    "FilesClientProtocol",
    "FilesError",
    "IncompleteListing",
    "IntegrityError",
    "Listing",
    "ProtocolViolation",
    "RemoteEntry",
    "RemoteError",
    "RemoteInfo",
    "Source",
    "TLSFailure",
    "WrongServer",
    "client_endpoint",
    "connect",
]

_T = TypeVar("_T")
#: A progress callback: called with the number of bytes just moved (a delta, not a total).
_Progress = Callable[[int], None] | None


class IncompleteListing(RemoteError):
    """A listing the server ended early (``END <n> truncated`` or ``END <n> failed``): taking
    it for the whole directory would be wrong (``get -r`` reports it as a refusal).

    ``code`` is the reason (``truncated``, ``failed``); ``listing`` what was listed.
    """

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
    """A remote directory's entries, sorted by name (by its bytes: the server sends them
    unsorted).

    ``reason`` is None for a whole listing; ``"truncated"`` (the server's ``--max-list`` was
    reached and more entries exist) or ``"failed"`` when the server ended it early.
    """

    def __init__(self, entries: builtins.list[RemoteEntry], reason: str | None = None) -> None:
        super().__init__(sorted(entries, key=lambda e: e.raw_name))
        self.reason = reason

    @property
    def complete(self) -> bool:
        """True when the server listed the whole directory."""
        return self.reason is None


class FilesClient:
    """The requests of the files protocol as methods returning Deferreds.

    Each method fails its Deferred with a :class:`FilesError` (:class:`RemoteError` for an
    ``ERR`` answer), or with ``ValueError`` for a path that would not fit on one line.
    """

    def __init__(self, protocol: FilesClientProtocol) -> None:
        self.protocol = protocol

    def get(self, path: str, sink: Callable[[bytes], None], offset: int = 0) -> defer.Deferred[int]:
        """Stream a file from byte ``offset`` on into ``sink``; fires with the number of bytes.

        ``sink(data)`` is called with each piece as it arrives (nothing is buffered); the
        Deferred fires once the last has.  Nothing is verified here: :func:`transfer.fetch
        <tcpfiles.files.transfer.fetch>` checks the size and sha256, and resumes.
        """
        return self.protocol.send(wire.Get(path, offset), sink).addCallback(wire.parse_count)

    def list(self, path: str = "") -> defer.Deferred[Listing]:
        """The entries of a remote directory (the root by default), sorted by name.

        Check :attr:`Listing.complete`: a server ends a listing longer than its ``--max-list``
        early (``END <n> truncated``).
        """

        def parsed(result: tuple[builtins.list[bytes], str | None]) -> Listing:
            lines, reason = result
            return Listing([wire.parse_list_row(line) for line in lines], reason)

        return self._answer(self.protocol.send(wire.List(path)), parsed)

    def stat(self, path: str) -> defer.Deferred[RemoteInfo]:
        """Kind (file or directory), size, mtime and, for a file, sha256."""
        return self._answer(self.protocol.send(wire.Stat(path)), wire.parse_stat)

    def login(self, user: str, password: str) -> defer.Deferred[str]:
        """Log in (servers with accounts); fires with the account name.  A wrong name or
        password is ``RemoteError("unauthorized", ...)``."""

        def welcomed(fields: tuple[str, ...]) -> str:
            name = wire.parse_welcome(fields)
            return user if name is None else name

        return self._answer(self.protocol.send(wire.Login(user, password)), welcomed)

    def mkdir(self, path: str) -> defer.Deferred[bool]:
        """Create a remote directory; fires True if created, False if it was there."""
        return self._answer(self.protocol.send(wire.Mkdir(path)), wire.parse_made)

    def put(
        self,
        path: str,
        source: Source,
        size: int | None = None,
        sha256: str | None = None,
        replace: bool = False,
        on_progress: _Progress = None,
        *,
        on_sent: _Progress = None,
    ) -> defer.Deferred[str]:
        """Upload ``source`` to ``path``; fires with the sha256 the server stored.

        ``source`` is a local file's path, a binary file object open for reading (sent from its
        current position to its end), or a descriptor (from offset 0).  ``size`` and ``sha256``
        are computed when not given: a file bigger than 256 KiB is hashed in the reactor's
        thread pool, never on the reactor thread (give both when you already know them, as a
        retry does).  ``replace`` allows overwriting a file that exists (``REPLACE``); without
        it that is ``RemoteError("exists", ...)``.

        ``on_sent(n)`` is called after each piece of the body is written, with ``n`` the bytes of
        that piece (a delta: add them up for a running total).  ``on_progress`` is its older
        name, kept working; give one or the other.

        The server checks everything (its size limit, free space, the name) before it asks for
        the body with ``OK send``; the body then streams with backpressure, and the final
        ``OK stored`` means the file is on disk under its name, its sha256 checked.  A local
        problem is an ``OSError`` (a missing file) or ``TypeError`` (a text file object).
        """
        if on_progress is not None and on_sent is not None:
            raise TypeError("give on_sent or on_progress (its older name), not both")
        coroutine = self._put(path, source, size, sha256, replace, on_sent or on_progress)
        return defer.Deferred.fromCoroutine(coroutine)

    async def _put(
        self,
        path: str,
        source: Source,
        size: int | None,
        sha256: str | None,
        replace: bool,
        on_sent: _Progress,
    ) -> str:
        opened = open_source(source, size)
        try:
            if sha256 is None:
                _, sha256 = await digest_of(opened, self.protocol.clock)

            def sent(n: int) -> None:
                self.protocol.touch()  # the stall watchdog counts bytes out as progress
                if on_sent is not None:
                    on_sent(n)

            transport, clock = self.protocol.transport, self.protocol.clock
            fields = await self.protocol.upload(
                wire.Put(path, opened.size, sha256, replace),
                lambda: opened.body(transport, clock, sent),
            )
        finally:
            opened.close()
        digest = wire.parse_stored(fields)
        return sha256 if digest is None else digest

    def help(self) -> defer.Deferred[builtins.list[str]]:
        """The server's HELP text, one str per line."""
        return self._answer(self.protocol.send(wire.Help()), wire.parse_help)

    def quit(self) -> defer.Deferred[None]:
        """Say goodbye; the server closes the connection."""
        return self.protocol.send(wire.Quit()).addCallback(lambda _: None)

    def close(self) -> None:
        """Close the connection without QUIT."""
        self.protocol.transport.loseConnection()

    def _answer(self, d: defer.Deferred[Any], parse: Callable[[Any], _T]) -> defer.Deferred[_T]:
        """``parse`` an answer's payload; one that breaks the protocol drops the connection
        and fails the request with :class:`ProtocolViolation`."""

        def parsed(payload: Any) -> _T:
            try:
                return parse(payload)
            except wire.ProtocolError as exc:
                raise self.protocol.violated(exc) from None

        return d.addCallback(parsed)


def connect(
    reactor: Any,
    server: str | interfaces.IStreamClientEndpoint,
    timeout: float | None = None,
    ca: str | None = None,
    insecure: bool = False,
) -> defer.Deferred[FilesClient]:
    """Connect to a files server; fires with a :class:`FilesClient`.

    ``server`` is ``"HOST[:PORT]"``, ``"[IPv6]:PORT"``, a client endpoint string
    (``"tls:files.example.org:8888"``, ``"unix:/run/files.sock"``), or any
    ``IStreamClientEndpoint`` (then ``ca`` and ``insecure`` do not apply: the endpoint carries
    its own TLS).  ``ca`` (a PEM file) is the authority a TLS server is checked against instead
    of the platform's; ``insecure`` checks nothing.  ``reactor`` is the clock for ``timeout``
    and the thread pool for hashing uploads.

    With ``timeout``, a connection that makes no progress for that long while a request is
    outstanding is dropped (its requests fail with :class:`ConnectionClosed`).  A connection
    that cannot be made fails with :class:`CannotConnect`; a ``server`` string that does not
    parse raises ``ValueError`` at once.
    """
    if isinstance(server, str):
        endpoint = client_endpoint(reactor, server, ca=ca, insecure=insecure)
    elif ca or insecure:
        raise ValueError("ca and insecure go with a server string: an endpoint has its own TLS")
    elif interfaces.IStreamClientEndpoint.providedBy(server):
        endpoint = server
    else:
        raise TypeError(f"not a server string or an IStreamClientEndpoint: {server!r}")
    protocol = FilesClientProtocol(reactor, timeout)
    connected = endpoint.connect(_Once(protocol))
    connected.addErrback(_cannot_connect)
    return connected.addCallback(lambda _: FilesClient(protocol))


class _Once(Factory):
    """A factory for one connection, with the protocol already made (as ``connectProtocol``)."""

    def __init__(self, protocol: Protocol) -> None:
        self.made = protocol

    def buildProtocol(self, addr: interfaces.IAddress | None) -> Protocol:
        return self.made


#: What endpoints fail with when no connection could be made.
_CONNECT_ERRORS = (error.ConnectError, error.DNSLookupError, error.TimeoutError)


def _cannot_connect(failure: Failure) -> Failure:
    """Twisted's connection errors as :class:`CannotConnect` (any other failure unchanged)."""
    if isinstance(failure.value, _CONNECT_ERRORS):
        raise CannotConnect(failure.value)
    return failure
