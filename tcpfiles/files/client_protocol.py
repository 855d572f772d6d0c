"""The client side of the files protocol: sends requests, matches the answers in order.

Requests may be issued without waiting: they are pipelined and answered in order.  A refusal
from the server fails the request's Deferred with :class:`RemoteError`; a lost connection fails
every outstanding request with :class:`ConnectionClosed` (or one of its kinds: a server that
breaks the protocol :class:`ProtocolViolation`, one of another kind :class:`WrongServer`, a
failed handshake :class:`TLSFailure`).  An upload (:meth:`FilesClientProtocol.upload`) holds
back the lines of requests issued after it until its body is out, so that pipelining stays safe.
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

from tcpfiles.core.sending import TransferStopped
from tcpfiles.files import wire
from tcpfiles.files.client_errors import (
    SILENT_CLOSE,
    ConnectionClosed,
    ProtocolViolation,
    RemoteError,
    TLSFailure,
    WrongServer,
)

__all__ = ["FilesClientProtocol"]


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
        self._holding = False  # an upload's PUT went out and its body has not: hold lines back
        self._held: deque[tuple[bytes, bool]] = deque()  # (line, whether it is a PUT)

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

    def upload(
        self, request: wire.Put, body: Callable[[], defer.Deferred[int]]
    ) -> defer.Deferred[tuple[str, ...]]:
        """Send a PUT (or REPLACE), then its body; fires with the fields of ``OK stored``.

        ``body()`` is called once the server has answered ``OK send`` and must write exactly
        ``request.size`` bytes to :attr:`transport` (a producer), firing when they are written.
        Lines of requests issued meanwhile are held back from the PUT line until the body is out
        or the PUT is refused: written in between, they would be taken for the body.  A body
        that fails (a local file that shrank, a read error) fails the upload with its error and
        drops the connection, which owes the server bytes it will never get.
        """
        try:
            line = wire.request_line(request)
        except ValueError as exc:
            return defer.fail(exc)
        asked = self._send(line, wire.STATUS, None, hold=True)
        stored: defer.Deferred[tuple[str, ...]] = defer.Deferred()

        def accepted(_fields: tuple[str, ...]) -> None:
            waiting = _Pending(stored, wire.STATUS)
            self.pending.appendleft(waiting)  # the next answer is this upload's, whatever follows
            sent = defer.maybeDeferred(body)
            sent.addCallback(lambda _count: self._release())
            sent.addErrback(self._body_failed, waiting)

        def refused(failure: Failure) -> None:
            self._release()
            stored.errback(failure)

        asked.addCallbacks(accepted, refused)
        return stored

    def _body_failed(self, failure: Failure, waiting: _Pending) -> None:
        self._holding = False
        self._held.clear()  # where the body was due, nothing else may go: they fail with the line
        gone = isinstance(failure.value, TransferStopped)  # the transport stopped us: it closes
        if gone or self.closed or waiting not in self.pending:
            return  # the connection went first: the upload fails with ConnectionClosed
        self.pending.remove(waiting)
        waiting.done.errback(failure)
        self.transport.abortConnection()

    def _send(
        self, line: bytes, kind: str, sink: Callable[[bytes], None] | None, hold: bool = False
    ) -> defer.Deferred[Any]:
        d = self.expect(kind, sink)
        if not self.closed:
            self._write(line, hold)
        return d

    def _write(self, line: bytes, hold: bool) -> None:
        """Write a request line, or keep it while an upload holds the line (``hold``: this is a
        PUT, and nothing more goes out after it until its body has)."""
        if self._holding:
            self._held.append((line, hold))
            return
        self.transport.write(line)
        self._holding = hold

    def _release(self) -> None:
        """An upload's body is out, or its PUT was refused: write the lines held back since."""
        self._holding = False
        while self._held and not self._holding and not self.closed:
            self._write(*self._held.popleft())

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
            self._fail_all(_protocol_failure(exc, data))
            self.transport.abortConnection()
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

    def violated(self, exc: wire.ProtocolError) -> ProtocolViolation:
        """An answer whose content breaks the protocol (a bad row, a bad STAT): the connection
        is dropped, as nothing after it can be trusted, and every request still waiting fails.
        Returns the error to fail the answer's own request with."""
        violation = ProtocolViolation(f"bad response from server: {exc}")
        if not self.closed:
            self._fail_all(violation)
            self.transport.abortConnection()
        return violation

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail whatever was still waiting for an answer."""
        self.closed = True
        self._held.clear()
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        tls = _tls_failure(reason)
        if tls is not None:
            self._fail_all(TLSFailure(tls))
            return
        silent = isinstance(reason.value, ConnectionDone)
        if not self.heard and not self.stalled and self.pending and silent:
            self._fail_all(WrongServer(SILENT_CLOSE))
            return
        why = f"no progress for {self.timeout:g} s" if self.stalled else reason.getErrorMessage()
        self._fail_all(ConnectionClosed(f"connection closed: {why}"))

    def _fail_all(self, error: BaseException) -> None:
        self.closed = True
        pending, self.pending = self.pending, deque()
        for p in pending:
            p.done.errback(error)


def _protocol_failure(exc: wire.ProtocolError, data: bytes) -> ConnectionClosed:
    """A response that breaks the protocol: a server of another kind says so at once."""
    if isinstance(exc, wire.NotAStatusLine):
        if data[:1] in (b"\x15", b"\x16") and data[1:2] == b"\x03":  # TLS alert, handshake
            return WrongServer("this looks like a TLS server: use tls:HOST:PORT or --ca FILE")
        return WrongServer(f"this is not a tcpfiles files server: {exc}")
    return ProtocolViolation(f"bad response from server: {exc}")
