"""A Deferred-returning client for the files protocol, for the CLI and any Twisted program.

::

    client = yield connect(reactor, "localhost:8888")
    entries = yield client.list("docs")
    size = yield client.get("docs/a.txt", sink=out.write)
    result = yield fetch(client, "docs/a.txt", "a.txt")   # verified, atomic

Requests may be issued without waiting: they are pipelined and answered in order.  A refusal
from the server fails the request's Deferred with :class:`RemoteError`; a lost connection fails
every outstanding request with :class:`ConnectionClosed`.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from twisted.internet import defer, endpoints, interfaces
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from tcpfiles.files import codec

DEFAULT_PORT = 8888
_ENDPOINT_KINDS = ("tcp:", "tcp6:", "tls:", "ssl:", "unix:")


class RemoteError(Exception):
    """The server answered ``ERR <code> <text>``."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class ConnectionClosed(Exception):
    """The connection ended before the response was complete."""


class IntegrityError(Exception):
    """What arrived does not match what the server said it would send."""


@dataclass(frozen=True)
class RemoteEntry:
    """One entry of a remote directory listing."""

    kind: str  # "f" or "d"
    size: int | None
    mtime: str  # UTC, ISO 8601
    name: bytes  # the name as stored on the server (unescaped)

    @property
    def display_name(self) -> str:
        """The name as the server escaped it, safe for a terminal."""
        return codec.escape_name(self.name)


@dataclass(frozen=True)
class RemoteInfo:
    """What STAT said."""

    kind: str  # "file" or "dir"
    size: int | None
    mtime: str
    sha256: str | None


@dataclass
class _Pending:
    """A request sent and not yet fully answered."""

    done: defer.Deferred[Any]
    kind: str  # "bytes", "lines" or "status": what follows an OK
    sink: Callable[[bytes], None] | None = None
    remaining: int = 0
    lines: list[bytes] | None = None
    fields: tuple[str, ...] = ()
    started: bool = False


class FilesClientProtocol(Protocol):
    """The client side of the files protocol: sends requests, matches responses in order."""

    transport: Any

    def __init__(self) -> None:
        self.lines = codec.LineBuffer(codec.MAX_LINE * 8)
        self.pending: deque[_Pending] = deque()
        self.closed = False

    def request(
        self, line: str, kind: str, sink: Callable[[bytes], None] | None = None
    ) -> defer.Deferred[Any]:
        """Send one request line; the Deferred fires with the response's payload."""
        if "\n" in line or "\r" in line:
            return defer.fail(ValueError("a request cannot contain a line break"))
        if self.closed:
            return defer.fail(ConnectionClosed("the connection is closed"))
        pending = _Pending(defer.Deferred(), kind, sink)
        self.pending.append(pending)
        self.transport.write(line.encode("utf-8") + b"\n")
        return pending.done

    def dataReceived(self, data: bytes) -> None:
        """Feed the response parser."""
        current = self.pending[0] if self.pending else None
        if (
            current is not None
            and current.started
            and current.kind == "bytes"
            and not self.lines.pending
        ):
            # Fast path for file bodies: hand the bytes over without buffering them.
            body, data = data[: current.remaining], data[current.remaining :]
            self._deliver(current, body)
        if data:
            self.lines.feed(data)
        try:
            self._process()
        except codec.ProtocolError as exc:
            self._fail_all(Failure(ConnectionClosed(f"bad response from server: {exc}")))
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _deliver(self, current: _Pending, body: bytes) -> None:
        current.remaining -= len(body)
        if body and current.sink is not None:
            current.sink(body)
        if current.remaining == 0:
            self.pending.popleft()
            current.done.callback(current.fields)

    def _process(self) -> None:
        while self.pending:
            current = self.pending[0]
            if not current.started:
                line = self.lines.next_line()
                if line is None:
                    return
                status = codec.parse_status(line)
                if isinstance(status, codec.Err):
                    self.pending.popleft()
                    current.done.errback(RemoteError(status.code, status.text))
                    continue
                self._start(current, status.fields)
                continue
            if current.kind == "bytes":
                if not self.lines.pending:
                    return
                self._deliver(current, self.lines.take(current.remaining))
            else:  # lines
                assert current.lines is not None
                while current.remaining:
                    line = self.lines.next_line()
                    if line is None:
                        return
                    current.lines.append(line)
                    current.remaining -= 1
                self.pending.popleft()
                current.done.callback(current.lines)

    def _start(self, current: _Pending, fields: tuple[str, ...]) -> None:
        current.started = True
        current.fields = fields
        if current.kind == "status":
            self.pending.popleft()
            current.done.callback(fields)
            return
        if not fields or not fields[0].isdigit():
            raise codec.ProtocolError(f"expected OK <count>, got OK {' '.join(fields)[:80]}")
        current.remaining = int(fields[0])
        if current.kind == "lines":
            current.lines = []
        elif current.remaining == 0:
            self._deliver(current, b"")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail whatever was still waiting for an answer."""
        self.closed = True
        self._fail_all(Failure(ConnectionClosed(f"connection closed: {reason.getErrorMessage()}")))

    def _fail_all(self, failure: Failure) -> None:
        self.closed = True
        pending, self.pending = self.pending, deque()
        for p in pending:
            p.done.errback(failure)


def _parse_entry(line: bytes) -> RemoteEntry:
    try:
        kind, size, mtime, name = line.decode("utf-8").split(" ", 3)
        return RemoteEntry(
            kind, None if size == "-" else int(size), mtime, codec.unescape_name(name)
        )
    except ValueError as exc:
        raise codec.ProtocolError(f"bad LIST line {line[:80]!r}") from exc


def _parse_info(fields: tuple[str, ...]) -> RemoteInfo:
    values = codec.parse_fields(fields)
    try:
        size = values.get("size")
        return RemoteInfo(
            values["type"],
            None if size is None else int(size),
            values["mtime"],
            values.get("sha256"),
        )
    except (KeyError, ValueError) as exc:
        raise codec.ProtocolError(f"bad STAT answer {' '.join(fields)[:120]!r}") from exc


class FilesClient:
    """The requests of the files protocol as methods returning Deferreds."""

    def __init__(self, protocol: FilesClientProtocol) -> None:
        self.protocol = protocol

    def get(self, path: str, sink: Callable[[bytes], None], offset: int = 0) -> defer.Deferred[int]:
        """Stream a file (from ``offset``) into ``sink``; fires with the number of bytes."""
        line = f"GET {path}" if offset == 0 else f"RESUME {offset} {path}"
        d = self.protocol.request(line, "bytes", sink)
        return d.addCallback(lambda fields: int(fields[0]))

    def list(self, path: str = "") -> defer.Deferred[builtins.list[RemoteEntry]]:
        """The entries of a remote directory (the root by default)."""
        d = self.protocol.request(f"LIST {path}" if path else "LIST", "lines")
        return d.addCallback(lambda lines: [_parse_entry(line) for line in lines])

    def stat(self, path: str) -> defer.Deferred[RemoteInfo]:
        """Type, size, mtime and (for a file) sha256."""
        return self.protocol.request(f"STAT {path}", "status").addCallback(_parse_info)

    def help(self) -> defer.Deferred[builtins.list[str]]:
        """The server's HELP text, one str per line."""
        d = self.protocol.request("HELP", "lines")
        return d.addCallback(lambda lines: [line.decode("utf-8", "replace") for line in lines])

    def quit(self) -> defer.Deferred[None]:
        """Say goodbye; the server closes the connection."""
        return self.protocol.request("QUIT", "status").addCallback(lambda _: None)

    def close(self) -> None:
        """Close the connection without QUIT."""
        self.protocol.transport.loseConnection()


def client_endpoint(
    reactor: Any, server: str, default_port: int = DEFAULT_PORT
) -> interfaces.IStreamClientEndpoint:
    """An endpoint from ``HOST``, ``HOST:PORT``, ``[IPv6]:PORT`` or a client endpoint string."""
    if server.startswith(_ENDPOINT_KINDS):
        return endpoints.clientFromString(reactor, server)
    host, port = server, default_port
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], server)
    elif server.count(":") == 1:
        host, _, port_text = server.partition(":")
        port = _port(port_text, server)
    endpoint: interfaces.IStreamClientEndpoint = endpoints.HostnameEndpoint(
        reactor, host, port, timeout=10
    )
    return endpoint


def _port(text: str, server: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in {server!r}")
    return int(text)


def connect(reactor: Any, server: str) -> defer.Deferred[FilesClient]:
    """Connect to a files server: ``"localhost:8888"`` or any client endpoint string."""
    endpoint = client_endpoint(reactor, server)
    d = endpoints.connectProtocol(endpoint, FilesClientProtocol())
    return d.addCallback(FilesClient)


@dataclass(frozen=True)
class Fetched:
    """A file that arrived whole and checked."""

    path: str
    size: int
    sha256: str


@defer.inlineCallbacks
def fetch(
    client: FilesClient,
    remote: str,
    destination: str,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Any:
    """Download ``remote`` to ``destination``, verified, or leave nothing behind.

    The bytes go to ``destination + ".part"``, are checked against the size and sha256 that STAT
    reported, and are renamed into place only when both match.  ``on_start(size)`` is called
    once the size is known, ``on_progress(n)`` for every chunk.
    """
    info = yield client.stat(remote)
    if info.kind != "file":
        raise RemoteError("not-a-file", f"is a directory: {remote}")
    if on_start is not None:
        on_start(info.size)
    digest = hashlib.sha256()
    with part_file(destination) as out:

        def sink(data: bytes) -> None:
            out.write(data)
            digest.update(data)
            if on_progress is not None:
                on_progress(len(data))

        size = yield client.get(remote, sink)
        if size != info.size or digest.hexdigest() != info.sha256:
            raise IntegrityError(f"{remote} changed on the server during the download; try again")
    return Fetched(destination, size, info.sha256)


@contextlib.contextmanager
def part_file(destination: str) -> Iterator[BinaryIO]:
    """Write to ``destination + ".part"``; on success rename it into place, else remove it.

    The body of the ``with`` downloads and checks; an exception anywhere (a refusal, a lost
    connection, a failed check, a full disk) leaves no file behind.
    """
    part = destination + ".part"
    out = open(part, "wb")  # noqa: SIM115 - closed on both paths below
    try:
        yield out
        out.close()
        os.replace(part, destination)
    except BaseException:
        out.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        raise
