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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, endpoints, interfaces
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from tcpfiles.core.tls import client_tls_endpoint, parse_tls_server
from tcpfiles.files import wire
from tcpfiles.tree.producer import FileBodyProducer

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


class WrongServer(ConnectionClosed):
    """What answered is not a tcpfiles files server (or needs TLS): retrying cannot help."""


#: What a client says when the server closed before a single byte of its first answer.
SILENT_CLOSE = (
    "the server closed the connection without answering: if it is a TLS server, use "
    "tls:HOST:PORT or --ca FILE; otherwise it is not a tcpfiles files server"
)


class TLSFailure(ConnectionClosed):
    """The TLS handshake failed: an untrusted certificate, a wrong host name, an old version.

    Not worth retrying: the same server will fail the same way.
    """


def _tls_failure(reason: Failure) -> str | None:
    """A sentence if ``reason`` is a TLS handshake or verification failure, else None."""
    names = {f"{c.__module__}.{c.__name__}" for c in type(reason.value).__mro__}
    if names & {"OpenSSL.SSL.Error", "service_identity.exceptions.VerificationError"}:
        from tcpfiles.core.tls import explain

        return explain(f"{type(reason.value).__name__}: {reason.value}")
    return None


class IntegrityError(Exception):
    """What arrived does not match what the server said it would send."""


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


@dataclass(frozen=True)
class RemoteEntry:
    """One entry of a remote directory listing."""

    kind: str  # "f" a file, "d" a directory, "x" an entry whose name no request can carry
    size: int | None
    mtime: str  # UTC, ISO 8601
    name: bytes  # the name as stored on the server (unescaped)

    @property
    def display_name(self) -> str:
        """The name as the server escaped it, safe for a terminal."""
        return wire.escape_name(self.name)


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
    kind: str  # "bytes", "lines", "listing" or "status": what follows an OK
    sink: Callable[[bytes], None] | None = None
    remaining: int = 0
    lines: list[bytes] | None = None
    fields: tuple[str, ...] = ()
    started: bool = False
    until_end: bool = False  # a listing: lines up to its END line, not a count


class FilesClientProtocol(Protocol):
    """The client side of the files protocol: sends requests, matches responses in order."""

    transport: Any

    def __init__(
        self, clock: interfaces.IReactorTime | None = None, timeout: float | None = None
    ) -> None:
        self.lines = wire.LineBuffer(wire.MAX_LINE * 8)
        self.pending: deque[_Pending] = deque()
        self.closed = False
        self.clock = clock
        self.timeout = timeout  # no progress either way for this long: drop the connection
        self._watchdog: interfaces.IDelayedCall | None = None
        self.stalled = False
        self.heard = False  # any byte from the server yet

    def request(
        self, line: str, kind: str, sink: Callable[[bytes], None] | None = None
    ) -> defer.Deferred[Any]:
        """Send one request line; the Deferred fires with the response's payload."""
        if "\n" in line or "\r" in line:
            return defer.fail(ValueError("a request cannot contain a line break"))
        d = self.expect(kind, sink)
        if not self.closed:
            self.transport.write(line.encode("utf-8") + b"\n")
        return d

    def expect(self, kind: str, sink: Callable[[bytes], None] | None = None) -> defer.Deferred[Any]:
        """Wait for one more response without sending a line (an upload's final status)."""
        if self.closed:
            return defer.fail(ConnectionClosed("the connection is closed"))
        pending = _Pending(defer.Deferred(), kind, sink)
        self.pending.append(pending)
        self.touch()
        return pending.done

    def touch(self) -> None:
        """Progress (bytes in or out): push the stall watchdog back."""
        if self.clock is None or self.timeout is None or self.closed:
            return
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.reset(self.timeout)
        else:
            self._watchdog = self.clock.callLater(self.timeout, self._stall)

    def _stall(self) -> None:
        self._watchdog = None
        if self.pending:
            self.stalled = True
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        """Feed the response parser."""
        self.touch()
        self.heard = True
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
        except wire.ProtocolError as exc:
            self._fail_all(Failure(_protocol_failure(exc, data)))
            self.transport.abortConnection()  # type: ignore[attr-defined]
        if not self.pending and self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()

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
                status = wire.parse_status(line)
                if isinstance(status, wire.Err):
                    self.pending.popleft()
                    current.done.errback(RemoteError(status.code, status.text))
                    continue
                self._start(current, status.fields)
                continue
            if current.kind == "bytes":
                if not self.lines.pending:
                    return
                self._deliver(current, self.lines.take(current.remaining))
            elif current.until_end:
                if not self._listing_lines(current):
                    return
            else:  # lines
                assert current.lines is not None
                while current.remaining:
                    line = self.lines.next_line()
                    if line is None:
                        return
                    current.lines.append(line)
                    current.remaining -= 1
                self.pending.popleft()
                current.done.callback(
                    (current.lines, None) if current.kind == "listing" else current.lines
                )

    def _listing_lines(self, current: _Pending) -> bool:
        """Take a listing's rows up to its END line; True once it has ended."""
        assert current.lines is not None
        while (line := self.lines.next_line()) is not None:
            end = wire.parse_list_end(line)
            if end is None:
                current.lines.append(line)
                continue
            count, reason = end
            if count != len(current.lines):
                raise wire.ProtocolError(f"END {count} after {len(current.lines)} rows")
            self.pending.popleft()
            current.done.callback((current.lines, reason))
            return True
        return False

    def _start(self, current: _Pending, fields: tuple[str, ...]) -> None:
        current.started = True
        current.fields = fields
        if current.kind == "status":
            self.pending.popleft()
            current.done.callback(fields)
            return
        if current.kind == "listing" and fields == (wire.LIST_STATUS,):
            current.until_end = True
            current.lines = []
            return
        count = wire.parse_number(fields[0]) if fields else None
        if count is None:
            raise wire.ProtocolError(f"expected OK <count>, got OK {' '.join(fields)[:80]}")
        current.remaining = count
        if current.kind in ("lines", "listing"):  # a listing from an older server: OK <n>
            current.lines = []
        elif current.remaining == 0:
            self._deliver(current, b"")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail whatever was still waiting for an answer."""
        self.closed = True
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        tls = _tls_failure(reason)
        if tls is not None:
            self._fail_all(Failure(TLSFailure(tls)))
            return
        if not self.heard and not self.stalled and self.pending and reason.check(ConnectionDone):
            self._fail_all(Failure(WrongServer(SILENT_CLOSE)))
            return
        why = f"no progress for {self.timeout:g} s" if self.stalled else reason.getErrorMessage()
        self._fail_all(Failure(ConnectionClosed(f"connection closed: {why}")))

    def _fail_all(self, failure: Failure) -> None:
        self.closed = True
        pending, self.pending = self.pending, deque()
        for p in pending:
            p.done.errback(failure)


def _protocol_failure(exc: wire.ProtocolError, data: bytes) -> ConnectionClosed:
    """A response that breaks the protocol: a server of another kind says so at once."""
    if str(exc).startswith("not a status line"):
        if data[:1] in (b"\x15", b"\x16") and data[1:2] == b"\x03":  # TLS alert, handshake
            return WrongServer("this looks like a TLS server: use tls:HOST:PORT or --ca FILE")
        return WrongServer(f"this is not a tcpfiles files server: {exc}")
    return ConnectionClosed(f"bad response from server: {exc}")


def _parse_entry(line: bytes) -> RemoteEntry:
    try:
        kind, size, mtime, name = line.decode("utf-8").split(" ", 3)
        return RemoteEntry(kind, _size(size), mtime, wire.unescape_name(name))
    except ValueError as exc:
        raise wire.ProtocolError(f"bad LIST line {line[:80]!r}") from exc


def _size(text: str) -> int | None:
    """A size field: ``-`` (none) or a protocol number; ValueError otherwise."""
    if text == "-":
        return None
    value = wire.parse_number(text)
    if value is None:
        raise ValueError(f"bad size {text[:40]!r}")
    return value


def _parse_info(fields: tuple[str, ...]) -> RemoteInfo:
    values = wire.parse_fields(fields)
    try:
        size = values.get("size")
        return RemoteInfo(
            values["type"],
            None if size is None else _size(size),
            values["mtime"],
            values.get("sha256"),
        )
    except (KeyError, ValueError) as exc:
        raise wire.ProtocolError(f"bad STAT answer {' '.join(fields)[:120]!r}") from exc


class FilesClient:
    """The requests of the files protocol as methods returning Deferreds."""

    def __init__(self, protocol: FilesClientProtocol) -> None:
        self.protocol = protocol

    def get(self, path: str, sink: Callable[[bytes], None], offset: int = 0) -> defer.Deferred[int]:
        """Stream a file (from ``offset``) into ``sink``; fires with the number of bytes."""
        line = f"GET {path}" if offset == 0 else f"RESUME {offset} {path}"
        d = self.protocol.request(line, "bytes", sink)
        return d.addCallback(lambda fields: int(fields[0]))

    def list(self, path: str = "") -> defer.Deferred[Listing]:
        """The entries of a remote directory (the root by default), sorted by name.

        Check :attr:`Listing.complete`: a server ends a listing longer than its ``--max-list``
        early (``END <n> truncated``).
        """
        d = self.protocol.request(f"LIST {path}" if path else "LIST", "listing")

        def parsed(result: tuple[builtins.list[bytes], str | None]) -> Listing:
            lines, reason = result
            return Listing([_parse_entry(line) for line in lines], reason)

        return d.addCallback(parsed)

    def stat(self, path: str) -> defer.Deferred[RemoteInfo]:
        """Type, size, mtime and (for a file) sha256."""
        return self.protocol.request(f"STAT {path}", "status").addCallback(_parse_info)

    def login(self, user: str, password: str) -> defer.Deferred[str]:
        """Log in (servers with accounts); fires with the account name."""
        d = self.protocol.request(f"LOGIN {user} {password}", "status")
        return d.addCallback(lambda fields: fields[1] if len(fields) > 1 else user)

    def mkdir(self, path: str) -> defer.Deferred[bool]:
        """Create a remote directory; fires True if created, False if it was there."""
        d = self.protocol.request(f"MKDIR {path}", "status")
        return d.addCallback(lambda fields: fields[:1] == ("created",))

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
        verb = "REPLACE" if replace else "PUT"
        yield self.protocol.request(f"{verb} {size} {sha256} {path}", "status")
        stored = self.protocol.expect("status")
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
        fields = yield stored
        return fields[2] if len(fields) > 2 else sha256

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
    reactor: Any,
    server: str,
    default_port: int = DEFAULT_PORT,
    ca: str | None = None,
    insecure: bool = False,
) -> interfaces.IStreamClientEndpoint:
    """An endpoint for ``HOST``, ``HOST:PORT``, ``[IPv6]:PORT`` or a client endpoint string.

    ``tls:host=H:port=P`` verifies the server against the platform's trust store; ``ca`` (a PEM
    file) trusts that authority instead, and turns a plain ``HOST:PORT`` into TLS too;
    ``insecure`` makes TLS connections without any verification.
    """
    if not server.strip():
        raise ValueError("the server is empty: give HOST[:PORT] or an endpoint string")
    is_tls = server.startswith("tls:")
    if server.startswith(_ENDPOINT_KINDS) and not is_tls:
        if ca or insecure:
            raise ValueError("--ca and --insecure go with a tls: server or HOST:PORT")
        return _from_string(reactor, server)
    if is_tls and not (ca or insecure):
        return _from_string(reactor, server)
    host, port = parse_tls_server(server) if is_tls else _host_port(server, default_port)
    if not host:
        raise ValueError(f"no host in {server!r}")
    if ca or insecure:
        return client_tls_endpoint(reactor, host, port, ca, insecure)
    endpoint: interfaces.IStreamClientEndpoint = endpoints.HostnameEndpoint(
        reactor, host, port, timeout=10
    )
    return endpoint


def _from_string(reactor: Any, server: str) -> interfaces.IStreamClientEndpoint:
    """``clientFromString``, with every malformed string a ValueError (a missing ``port=`` is a
    TypeError inside Twisted)."""
    try:
        return endpoints.clientFromString(reactor, server)
    except (TypeError, KeyError, IndexError) as exc:
        missing = "port" if "port" in str(exc) else "a required argument"
        raise ValueError(f"bad endpoint string {server!r}: missing {missing}") from None


def _host_port(server: str, default_port: int) -> tuple[str, int]:
    host, port = server, default_port
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], server)
    elif server.count(":") == 1:
        host, _, port_text = server.partition(":")
        port = _port(port_text, server)
    return host, port


def _port(text: str, server: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in {server!r}")
    return int(text)


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
