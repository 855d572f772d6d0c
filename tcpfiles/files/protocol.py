"""One connection of the files server: a thin protocol over the wire format and the store.

One connection carries any number of requests, answered strictly in order.  While a response is
being sent, later (pipelined) requests wait in the line buffer; reading stops when that buffer is
full, so a client cannot make the server hold more than a bounded amount of its input.

Where the connection is, and the data that goes with it, is its state object
(:mod:`~tcpfiles.files.states`); each request is answered by its handler
(:mod:`~tcpfiles.files.handlers`), which may move the connection to a state of its own (a body
going out or coming in, a listing, a hash or a login being waited for).

Timers, all from the injected clock, each held by the state it belongs to: a request line must
be complete within ``line_timeout`` of its first byte (a trickle does not reset it); a
connection with nothing to do is closed after ``idle_timeout``; a body that makes no progress
for ``stall_timeout`` is aborted.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from twisted.internet import interfaces
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpfiles.core.connections import describe_peer
from tcpfiles.core.guard import kernel_idle_timeout
from tcpfiles.core.rates import Pace, TokenBucket, as_pace
from tcpfiles.core.sending import close_now, send_paced
from tcpfiles.files import wire
from tcpfiles.files.handlers import ROUTES, refuse
from tcpfiles.files.limits import BAD_REQUESTS_LOGGED, REQUESTS_PER_TURN
from tcpfiles.files.states import (
    CLOSED,
    CLOSING,
    RESPONDING,
    WAITING,
    Answering,
    Closing,
    Idle,
    NextTurn,
    ReadingLine,
    State,
)
from tcpfiles.tree.paths import PathError

if TYPE_CHECKING:
    from tcpfiles.files.server import FileServerFactory

log = Logger(namespace="tcpfiles.files")

#: Request lines read lately and what they were (the request, its text as logged): clients ask
#: for the same few files again and again, and reading a line again was a tenth of a small
#: GET's Python (docs/performance.md).  Only reads (no secret in them, nothing stored) of short
#: lines are kept, the oldest dropped past ``_RECENT_LINES``.
_RECENT: dict[bytes, tuple[wire.Request, str]] = {}
_RECENT_LINES = 256
_REREAD = (wire.Get, wire.Stat, wire.List)


def _read_request(line: bytes) -> tuple[wire.Request, str]:
    """``line``'s request, and its text as logged (never a password)."""
    known = _RECENT.get(line)
    if known is not None:
        return known
    request = wire.parse_request(line)
    known = request, wire.shown(request, line)
    if type(request) in _REREAD and len(line) <= 512:
        if len(_RECENT) >= _RECENT_LINES:
            del _RECENT[next(iter(_RECENT))]
        _RECENT[line] = known
    return known


@implementer(interfaces.IHalfCloseableProtocol)
class FileServerProtocol(Protocol):
    """One client connection of the files service.

    A client may half-close (``printf 'GET x\n' | nc -N host 8888``): every request already
    received is still answered in full, then the connection is closed.
    """

    #: A TCP (or TLS, UNIX) transport: ITCPTransport and IPushProducer at run time.
    transport: Any

    def __init__(self, factory: FileServerFactory) -> None:
        self.factory = factory
        self.limits = factory.limits
        self.clock = factory.clock
        self.lines = wire.LineBuffer(self.limits.max_line)
        self.peer = "?"
        #: What this connection may reach: the server's own account without --auth; with it,
        #: none (or anonymous) until LOGIN succeeds.
        self.account: Any = factory.default_account
        #: The request being answered, as logged, and when it arrived.
        self.request_text = ""
        self.started = 0.0
        # The two waiting states, made once: a connection goes through them at every request.
        self.idle: State = Idle(self)
        self.reading_line: State = ReadingLine(self)
        self.state: State = self.idle
        self._pumping = False  # in the request loop (an answer sent at once does not re-enter)
        self._draining = False  # shutting down: no request after the current one
        self._input_closed = False  # the client half-closed: no request after those buffered
        self._reading_paused = False
        self._bad_requests = 0  # bad requests so far (only the first few are logged)
        #: ``--rate``: this connection's own bucket, made at its first transfer.
        self.bucket: TokenBucket | None = None
        #: Whether the wait for a request has a timer of its own: not under the kernel's guard
        #: with the same idle timeout, whose timer calls :meth:`timed_out` (one timer fewer per
        #: connection, and none to push back at every request: 6% of a one-request connection's
        #: instructions, measured).
        self._idle_timer = True

    # --- connection life ------------------------------------------------------------------

    def connectionMade(self) -> None:
        """Wait for a request."""
        self.peer = describe_peer(self.transport.getPeer())
        self._idle_timer = kernel_idle_timeout(self.transport) != self.limits.idle_timeout
        self.pump()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Let the state release what it holds (a request cut off logs so), and forget the
        connection."""
        state, self.state = self.state, Closing(self)
        state.lost()
        if self._bad_requests > BAD_REQUESTS_LOGGED:
            log.info(
                "{peer}: {count} more bad requests were answered but not logged",
                peer=self.peer,
                count=self._bad_requests - BAD_REQUESTS_LOGGED,
            )
        # What still runs for this connection (a hash, a listing's batch) finds it closed;
        # its own states point back at it: let them go, and the connection is freed now.
        self.state = self.idle = self.reading_line = CLOSED

    def drain(self) -> None:
        """Shutting down: close now if idle, else after the current response."""
        self._draining = True
        if self.state.name == WAITING:
            self.close()

    def timed_out(self) -> None:
        """The kernel's idle timeout (tcpfiles.core.guard), which can fall due in the same
        instant as our own: the same answer between requests; otherwise just close."""
        if self.state.name == WAITING:
            self.idle.expired()
        else:
            self.close()

    def readConnectionLost(self) -> None:
        """The client sent all it will send: answer what is complete, then close."""
        self._input_closed = True
        self.state.input_ended()

    def writeConnectionLost(self) -> None:
        """The client can no longer read: nothing more to do here."""
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        """Hand the bytes to the state: requests to buffer and answer, or a body."""
        self.state.data_received(data)

    def enter(self, state: State) -> None:
        """Move to ``state``; the one left stops its timer."""
        self.state.leave()
        self.state = state

    # --- the request loop -----------------------------------------------------------------

    def pump(self) -> None:
        """Answer the complete requests buffered, in order, while the state takes them."""
        if self._pumping:
            return
        self._pumping = True
        try:
            waiting = self._take_requests()
        finally:
            self._pumping = False
        if waiting:
            self._wait()
        elif self.state.name == RESPONDING and self.lines.pending > self.limits.max_pending_input:
            self.pause_reading()

    def _take_requests(self) -> bool:
        """Handle buffered requests; True when all are answered and the next is awaited."""
        handled = 0
        while self.state.takes_requests:
            if self._draining:
                self.close()
                return False
            if handled == REQUESTS_PER_TURN:  # let other connections have the reactor
                self.pause_reading()
                turn = NextTurn(self)
                self.enter(turn)
                turn.arm(0)
                return False
            handled += 1
            try:
                line = self.lines.next_line()
            except wire.LineTooLong:
                self.request_text = "(line too long)"
                self.started = self.clock.seconds()
                self.fail_and_close("too-long", f"request line over {self.limits.max_line} bytes")
                return False
            if line is None:
                if self._input_closed:  # no more requests can come; a partial one is dropped
                    self.close()
                    return False
                return True
            self._handle(line)
        return False

    def _wait(self) -> None:
        """Nothing left to answer: read again, and time the wait for the next request."""
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()
        if not self.lines.pending:
            if self.state is not self.idle:
                self.enter(self.idle)
            if self._idle_timer:
                self.idle.arm(self.limits.idle_timeout)
        elif self.state is not self.reading_line:  # a trickle must not push the deadline back
            self.enter(self.reading_line)
            self.reading_line.arm(self.limits.line_timeout)

    def _handle(self, line: bytes) -> None:
        """One request: checked against the account, then given to its handler."""
        if self.state is self.reading_line:
            self.enter(self.idle)  # the line is complete: its deadline is over
        request, self.request_text = _read_request(line)
        self.started = self.clock.seconds()
        route = ROUTES[type(request)]
        try:
            if self.account is None and not route.before_login:
                self.error("unauthorized", "log in first: LOGIN <user> <password>")
            elif route.writes and self.account.uploads is None:
                self.error("read-only", "uploads are not enabled for you on this server")
            else:
                route.handle(self, request)
        except (PathError, OSError) as exc:
            refuse(self, exc, request)

    # --- answers --------------------------------------------------------------------------

    def answer(self, outcome: str, nbytes: int, *pieces: bytes) -> None:
        """Send an answer; the next request is taken once the transport is ready for more."""
        d = send_paced(self.transport, *pieces)
        if d is None or (d.called and not isinstance(d.result, Failure)):  # taken at once
            self.finished(outcome, nbytes)
            return
        waiting = Answering(self, outcome, nbytes)  # the client is not reading (or is gone)
        self.enter(waiting)
        d.addCallbacks(waiting.sent, waiting.cut_off)
        if waiting.current:
            waiting.start_timer()

    def respond(self, data: bytes) -> None:
        """Answer ``OK ...``: a whole answer in one piece."""
        self.answer("OK", len(data), data)

    def error(self, code: str, text: str) -> None:
        """Answer ``ERR <code> <text>``; the connection goes on."""
        line = wire.err_line(code, text)
        self.answer(f"ERR {code}", len(line), line)

    def fail_and_close(self, code: str, text: str) -> None:
        """Answer ``ERR <code> <text>`` and close."""
        line = wire.err_line(code, text)
        self.transport.write(line)
        self.log_outcome(f"ERR {code}", len(line))
        self.close()

    def finished(self, outcome: str, nbytes: int) -> None:
        """An answer is out: log it, then take the next request."""
        self.log_outcome(outcome, nbytes)
        if self.state.takes_requests or self.state.name == CLOSING:
            return  # answered at once, in the request loop (which goes on), or closed meanwhile
        self.enter(self.idle)
        if not self._pumping:
            self.pump()

    def log_outcome(self, outcome: str, nbytes: int) -> None:
        """The one event per request.  Its text is rendered here, braces doubled, so observers
        format a literal: twisted.logger's own template formatting was a third of the cost of
        logging a small GET (measured).  The fields stay in the event for structured observers.
        Past :data:`BAD_REQUESTS_LOGGED` bad requests a connection's are only counted."""
        seconds = self.clock.seconds() - self.started
        if self.factory.record_request is not None:  # --metrics (tcpfiles.files.metrics)
            self.factory.record_request(self.request_text, outcome, nbytes, seconds)
        if outcome == "ERR bad-request":
            self._bad_requests += 1
            if self._bad_requests > BAD_REQUESTS_LOGGED:
                return
        text = f"{self.peer} {self.request_text} -> {outcome} {nbytes} bytes in {seconds:.3f}s"
        # The event Logger.info would make, handed to its observer directly: Logger.emit also
        # checks the level against every level there is (a sort) at every call.
        log.observer(
            {
                "peer": self.peer,
                "request": self.request_text,
                "outcome": outcome,
                "nbytes": nbytes,
                "seconds": seconds,
                "log_logger": log,
                "log_level": LogLevel.info,
                "log_namespace": log.namespace,
                "log_source": None,
                "log_format": text.replace("{", "{{").replace("}", "}}")
                if "{" in text or "}" in text
                else text,
                "log_time": time.time(),
            }
        )

    def activity(self) -> dict[str, Any] | None:
        """The transfer in flight, for ``tcpfiles status``: its peer, request, bytes moved so
        far of its size, and seconds since the request; None when there is none."""
        transferred = getattr(self.state, "transferred", None)
        if transferred is None:
            return None
        moved, size = transferred()
        seconds = self.clock.seconds() - self.started
        return {
            "peer": self.peer,
            "request": self.request_text,
            "bytes": moved,
            "size": size,
            "seconds": seconds,
        }

    def close(self) -> None:
        """Close once what is written has been sent (from a state that holds nothing): at
        once when the kernel has it all already (``connectionLost`` runs before this returns)."""
        self.enter(Closing(self))
        if not close_now(self.transport):
            self.transport.loseConnection()

    def abort(self) -> None:
        """Drop the connection now (a stalled client, a body that cannot be completed); what
        the state holds goes when the connection does."""
        self.enter(Closing(self, self.state))
        self.transport.abortConnection()

    def pause_reading(self) -> None:
        """Stop reading from the client (until :meth:`resume_reading`, or the next request)."""
        if not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        """Read again (an upload's rate allowance has come)."""
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()

    def pace(self) -> Pace | None:
        """What a transfer draws on now: this connection's bucket (``--rate``) and its
        account's (``rate=``, shared by all its connections); None when neither limits it."""
        shared = getattr(self.account, "bucket", None)
        if self.limits.rate and self.bucket is None:
            self.bucket = TokenBucket(self.clock, self.limits.rate)
        if self.bucket is None and shared is None:
            return None
        return as_pace((self.bucket, shared))
