"""The client side of the files protocol: sends requests, matches the answers in order.

Requests may be issued without waiting: they are pipelined and answered in order.  A refusal
from the server fails the request's Deferred with :class:`RemoteError`; a lost connection fails
every outstanding request with :class:`ConnectionClosed`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, interfaces
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from tcpfiles.files import wire
from tcpfiles.files.client_errors import (
    SILENT_CLOSE,
    ConnectionClosed,
    RemoteError,
    TLSFailure,
    WrongServer,
)


def _tls_failure(reason: Failure) -> str | None:
    """A sentence if ``reason`` is a TLS handshake or verification failure, else None."""
    names = {f"{c.__module__}.{c.__name__}" for c in type(reason.value).__mro__}
    if names & {"OpenSSL.SSL.Error", "service_identity.exceptions.VerificationError"}:
        from tcpfiles.core.tls import explain

        return explain(f"{type(reason.value).__name__}: {reason.value}")
    return None


@dataclass
class _Pending:
    """A request sent and not yet fully answered."""

    done: defer.Deferred[Any]
    kind: str  # what follows its OK: wire.STATUS, wire.BYTES, wire.LINES or wire.LISTING
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

    def send(
        self, request: wire.Sendable, sink: Callable[[bytes], None] | None = None
    ) -> defer.Deferred[Any]:
        """Send one request; the Deferred fires with its answer's payload: the status line's
        fields, the lines that follow it, or a listing's rows and how it ended."""
        try:
            line = wire.request_line(request)
        except ValueError as exc:
            return defer.fail(exc)
        return self._send(line, request.answer, sink)

    def request(
        self, line: str, kind: str, sink: Callable[[bytes], None] | None = None
    ) -> defer.Deferred[Any]:
        """Send one request line as given (``kind``: what follows its ``OK``, one of
        :data:`wire.STATUS <tcpfiles.files.wire.STATUS>`, ``BYTES``, ``LINES``, ``LISTING``)."""
        try:
            data = wire.text_line(line)
        except ValueError as exc:
            return defer.fail(exc)
        return self._send(data, kind, sink)

    def _send(
        self, line: bytes, kind: str, sink: Callable[[bytes], None] | None
    ) -> defer.Deferred[Any]:
        d = self.expect(kind, sink)
        if not self.closed:
            self.transport.write(line)
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
            and current.kind == wire.BYTES
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
            if current.kind == wire.BYTES:
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
                    (current.lines, None) if current.kind == wire.LISTING else current.lines
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
        if current.kind == wire.STATUS:
            self.pending.popleft()
            current.done.callback(fields)
            return
        if current.kind == wire.LISTING and fields == (wire.LIST_STATUS,):
            current.until_end = True
            current.lines = []
            return
        current.remaining = wire.parse_count(fields)
        if current.kind in (wire.LINES, wire.LISTING):  # a listing from an older server: OK <n>
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
    if isinstance(exc, wire.NotAStatusLine):
        if data[:1] in (b"\x15", b"\x16") and data[1:2] == b"\x03":  # TLS alert, handshake
            return WrongServer("this looks like a TLS server: use tls:HOST:PORT or --ca FILE")
        return WrongServer(f"this is not a tcpfiles files server: {exc}")
    return ConnectionClosed(f"bad response from server: {exc}")
