"""The files server: a thin protocol over the codec and the store, and its factory.

One connection carries any number of requests, answered strictly in order.  While a response is
being sent, later (pipelined) requests wait in the line buffer; reading stops when that buffer is
full, so a client cannot make the server hold more than a bounded amount of its input.

Timers, all from the injected clock: a request line must be complete within ``line_timeout`` of
its first byte (a trickle does not reset it); a connection with nothing to do is closed after
``idle_timeout``; a body that makes no progress for ``stall_timeout`` is aborted.

A LIST is streamed: the directory is read a batch at a time in the thread pool, and the next
batch is read only once the transport has taken the previous one, so a listing never holds more
than one batch per connection and never makes the reactor wait for the file system.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet import defer, interfaces
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpfiles.core.auth import UNAUTHORIZED, LoginLimiter, password_credentials
from tcpfiles.core.connections import LimitedFactory, describe_peer, peer_key
from tcpfiles.core.sending import write_paced
from tcpfiles.files import wire
from tcpfiles.tree.accounts import (
    ANONYMOUS,
    Account,
)
from tcpfiles.tree.interfaces import IFilesAccount, IFileStore
from tcpfiles.tree.listing import DirListing, Entry, ListBatch
from tcpfiles.tree.paths import PathError, exhausted
from tcpfiles.tree.producer import (
    CHUNK_SIZE,
    FileBodyProducer,
    FileShrank,
    TransferStopped,
)
from tcpfiles.tree.store import FileInfo, OpenedFile
from tcpfiles.tree.uploads import Upload, Uploads, make_directory
from tcpfiles.tree.zerocopy import SendfileProducer, cork, sendfile_possible

#: Pipelined requests answered in one reactor turn before the others wait for the next turn:
#: 64 KiB of empty lines held every connection of the process for 3.5 s when taken at once.
REQUESTS_PER_TURN = 64
#: Bad requests logged per connection; the rest are counted, and the count logged at the end
#: (one client sending newlines wrote 290,000 log lines in 10 s).
BAD_REQUESTS_LOGGED = 16

#: Bodies up to this size are read and written in one step (with the status line, one send):
#: cheaper than sendfile plus setting and clearing TCP_CORK (measured: 16% of the time for 64 KiB).
SMALL_BODY = 256 * 1024

log = Logger(namespace="tcpfiles.files")


@dataclass(frozen=True)
class Limits:
    """Every bound a files server enforces; the defaults are the documented ones."""

    max_line: int = wire.MAX_LINE
    line_timeout: float = 30.0
    idle_timeout: float = 300.0
    stall_timeout: float = 60.0
    max_per_peer: int = 64
    max_connections: int = 1024
    #: Unparsed input (pipelined requests) held while a response is sent, before reading stops.
    max_pending_input: int = 64 * 1024
    chunk_size: int = CHUNK_SIZE
    #: Send file bodies with os.sendfile where the transport allows it (plain TCP).
    zero_copy: bool = True
    #: Rows of one LIST answer; a longer listing ends with ``END <n> truncated``.
    max_list: int = 100_000
    #: Entries read (in the thread pool) and sent at a time by LIST: what a connection holds.
    list_batch: int = 500
    #: LIST batches being read in the thread pool at once, all connections together: the pool
    #: stays free for hashing and fsync, and the reactor shares the GIL with few threads.
    max_list_reads: int = 1


class State(enum.Enum):
    """Where a connection is in its request/response cycle."""

    WAITING = "waiting for a request"
    RESPONDING = "sending a response"
    RECEIVING = "receiving an upload's body"
    CLOSING = "closing"


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
        self.lines = wire.LineBuffer(self.limits.max_line)
        self.state = State.WAITING
        self.peer = "?"
        self._timer: interfaces.IDelayedCall | None = None
        self._timer_kind = ""
        self._pumping = False
        self._next_turn: interfaces.IDelayedCall | None = None  # the rest of a pipelined burst
        self._bad_requests = 0  # bad requests so far (only the first few are logged)
        self._draining = False
        self._input_closed = False
        self._reading_paused = False
        self._request = ""
        self._started = 0.0
        self._upload: Upload | None = None
        self._discard = 0  # body bytes still to skip after a failed upload
        self._upload_error: PathError | None = None
        self._hashing: defer.Deferred[FileInfo] | None = None  # a STAT waiting for its hash
        self._listing: DirListing | None = None
        self._listed = 0  # rows of the current listing sent so far
        self._list_bytes = 0
        self._list_looping = False
        self._list_again = False
        #: What this connection may reach: the server's own account without --auth; with it,
        #: none (or anonymous) until LOGIN succeeds.
        self.account: Any = factory.default_account

    # --- connection life ------------------------------------------------------------------

    def connectionMade(self) -> None:
        """Count the connection and wait for a request."""
        address = self.transport.getPeer()
        self.peer = describe_peer(address)
        self.factory.tracker.opened(self, address)
        self._pump()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop every timer and forget the connection."""
        self.state = State.CLOSING
        self._cancel_timer()
        if self._upload is not None:  # cut off mid-body: the temporary goes (then the log says so)
            self._upload.abort()
            self._log("aborted: connection lost", self._upload.received)
            self._upload = None
        if self._hashing is not None:  # nobody will read the answer: stop waiting for it
            self._hashing.cancel()
            self._log("aborted: connection lost", 0)  # one event per request, this one too
        if self._listing is not None:
            self._log("aborted: connection lost", self._list_bytes)
        self._end_listing()
        if self._next_turn is not None and self._next_turn.active():
            self._next_turn.cancel()
        if self._bad_requests > BAD_REQUESTS_LOGGED:
            log.info(
                "{peer}: {count} more bad requests were answered but not logged",
                peer=self.peer,
                count=self._bad_requests - BAD_REQUESTS_LOGGED,
            )
        self.factory.tracker.closed(self)

    def drain(self) -> None:
        """Shutting down: close now if idle, else after the current response."""
        self._draining = True
        if self.state is State.WAITING:
            self._close()

    def readConnectionLost(self) -> None:
        """The client sent all it will send: answer what is complete, then close."""
        self._input_closed = True
        if self.state is State.WAITING:
            self._pump()
        elif self.state is State.RECEIVING:  # the body can never be completed now
            self._close()
            if self._upload is not None:
                self._upload.abort()
                self._log("aborted: input ended mid-body", self._upload.received)
                self._upload = None

    def writeConnectionLost(self) -> None:
        """The client can no longer read: nothing more to do here."""
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        """Buffer input and answer every complete request we can."""
        if self.state is State.CLOSING:
            return
        if self.state is State.RECEIVING:
            data = self._body(data)
        self.lines.feed(data)
        self._pump()

    # --- the request loop -----------------------------------------------------------------

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        handled = 0
        try:
            while self.state is State.WAITING:
                if self._draining:
                    self._close()
                    return
                if handled == REQUESTS_PER_TURN:  # let other connections have the reactor
                    self._pause_reading()
                    self._next_turn = self.factory.clock.callLater(0, self._take_turn)
                    return
                handled += 1
                try:
                    line = self.lines.next_line()
                except wire.LineTooLong:
                    self._request = "(line too long)"
                    self._started = self.factory.clock.seconds()
                    self._fail_and_close(
                        "too-long", f"request line over {self.limits.max_line} bytes"
                    )
                    return
                if line is None:
                    if self._input_closed:  # no more requests can come; a partial one is dropped
                        self._close()
                        return
                    break
                self._handle(line)
        finally:
            self._pumping = False
        self._after_pump()

    def _take_turn(self) -> None:
        """The rest of a pipelined burst, a reactor turn later."""
        self._next_turn = None
        if self.state is State.WAITING:
            self._pump()

    def _after_pump(self) -> None:
        if self.state is State.WAITING:
            self._resume_reading()
            if self.lines.pending:
                if self._timer_kind != "line":  # a trickle must not push the deadline back
                    self._arm("line", self.limits.line_timeout, self._line_timed_out)
            else:
                self._arm("idle", self.limits.idle_timeout, self._idle_timed_out)
        elif self.state is State.RESPONDING and self.lines.pending > self.limits.max_pending_input:
            self._pause_reading()

    def _handle(self, line: bytes) -> None:
        self._cancel_timer()
        request = wire.parse_request(line)
        # Never log a password: a LOGIN line is logged as "LOGIN <user> ****".
        shown = str(request).encode() if isinstance(request, wire.Login) else line
        self._request = wire.escape_name(shown[:200])
        self._started = self.factory.clock.seconds()
        try:
            if isinstance(request, wire.Login):
                self._login(request)
            elif self.account is None and not isinstance(
                request, wire.Help | wire.Quit | wire.BadRequest
            ):
                self._error("unauthorized", "log in first: LOGIN <user> <password>")
            elif isinstance(request, wire.Get):
                self._get(request)
            elif isinstance(request, wire.List):
                self._list(request)
            elif isinstance(request, wire.Stat):
                self._stat(request)
            elif isinstance(request, wire.Help):
                body = "".join(f"{text}\n" for text in wire.HELP_LINES).encode()
                self._respond(wire.ok_line(len(wire.HELP_LINES)) + body, "OK")
            elif isinstance(request, wire.Quit):
                self._respond(wire.ok_line("bye"), "OK")
                self._close()
            elif isinstance(request, wire.Put | wire.Mkdir) and self.account.uploads is None:
                self._error("read-only", "uploads are not enabled for you on this server")
            elif isinstance(request, wire.Put):
                self._put(request)
            elif isinstance(request, wire.Mkdir):
                created = make_directory(self.account.uploads.root, request.path)
                self._respond(wire.ok_line("created" if created else "exists"), "OK")
            else:
                self._error("bad-request", request.message)
        except (PathError, OSError) as exc:
            refusal = refusal_of(exc)
            if refusal is not None:  # busy when out of descriptors: retryable, no traceback
                self._error(refusal.code, f"{refusal}: {request_path(request)}")
                return
            log.failure(
                "{peer} {request}: file system error", peer=self.peer, request=self._request
            )
            assert isinstance(exc, OSError)  # a PathError is always a refusal
            self._error("internal", f"server file system error ({exc.strerror})")

    # --- responses ------------------------------------------------------------------------

    def _get(self, request: wire.Get) -> None:
        opened = self.account.store.open_file(request.path)
        if request.offset > opened.size:
            opened.close()
            self._error(
                "bad-request",
                f"offset {request.offset} is past the end of the file ({opened.size} bytes)",
            )
            return
        count = opened.size - request.offset
        if count <= SMALL_BODY:
            self._send_small(opened, request.offset, count)
            return
        zero_copy = self.limits.zero_copy and sendfile_possible(self.transport)
        if zero_copy:
            cork(self.transport, True)  # the status line waits for the body's first segment
        self.transport.write(wire.ok_line(count))
        self.state = State.RESPONDING
        self._arm("stall", self.limits.stall_timeout, self._stalled)
        producer: FileBodyProducer | SendfileProducer
        if zero_copy:
            producer = SendfileProducer(
                opened.fd, request.offset, count, on_progress=self._progress
            )
        else:
            producer = FileBodyProducer(
                opened.fd,
                request.offset,
                count,
                self.limits.chunk_size,
                self._progress,
                clock=self.factory.clock,
            )
        d = producer.begin(self.transport)
        if zero_copy:
            d.addBoth(self._uncork)
        d.addBoth(self._body_done, opened, producer)

    def _send_small(self, opened: OpenedFile, offset: int, count: int) -> None:
        """A short body: read whole and written with its status line (on an idle plain TCP
        connection, one ``sendmsg``); the next request waits only if the transport holds more
        than it should (a client that is not reading)."""
        try:
            data = os.pread(opened.fd, count, offset) if count else b""
        finally:
            opened.close()
        # Nothing is sent yet: a file that shrank since fstat is served as it is now.
        self._answer("OK", len(data), wire.ok_line(len(data)), data)

    def _uncork(self, result: Any) -> Any:
        if self.transport.connected and not self.transport.disconnected:
            cork(self.transport, False)  # flush the last partial segment now
        return result

    def _progress(self, _nbytes: int) -> None:
        if self._timer_kind == "stall" and self._timer is not None:
            self._timer.reset(self.limits.stall_timeout)

    def _body_done(
        self,
        result: int | Failure,
        opened: OpenedFile,
        producer: FileBodyProducer | SendfileProducer,
    ) -> None:
        opened.close()
        if not isinstance(result, Failure):
            self._finished("OK", result)
            return
        if result.check(TransferStopped):
            self._log("aborted: connection lost", producer.sent)
            return
        reason = "file shrank" if result.check(FileShrank) else "read error"
        self._log(f"aborted: {reason}", producer.sent)
        if result.check(OSError):
            log.failure(
                "{peer} {request}: read failed", result, peer=self.peer, request=self._request
            )
        self.state = State.CLOSING
        self.transport.abortConnection()  # the promised size cannot be kept

    def _put(self, request: wire.Put) -> None:
        assert self.account is not None and self.account.uploads is not None
        upload = self.account.uploads.begin(
            request.path, request.size, request.sha256, request.replace
        )
        self._upload, self._upload_error, self._discard = upload, None, 0
        self.transport.write(wire.ok_line("send", request.size))
        self.state = State.RECEIVING
        self._arm("stall", self.limits.stall_timeout, self._stalled)
        # A client that sent the body without waiting for "OK send": it is already buffered.
        self._body(self.lines.take(min(upload.remaining, self.lines.pending)))

    def _body(self, data: bytes) -> bytes:
        """Feed upload body bytes; return what follows the body (the next requests)."""
        upload = self._upload
        if upload is None or self.state is not State.RECEIVING:
            return data
        if self._timer_kind == "stall" and self._timer is not None:
            self._timer.reset(self.limits.stall_timeout)
        expected = self._discard if upload.finished else upload.remaining
        body, rest = data[:expected], data[expected:]
        if upload.finished:  # it failed earlier: skip the rest of its body
            self._discard -= len(body)
        elif body:
            try:
                upload.write(body)
            except (PathError, OSError) as exc:
                self._upload_error = exc if isinstance(exc, PathError) else None
                self._discard = upload.remaining - len(body)
                upload.abort()
        if upload.finished and self._discard == 0:
            self._upload_failed()
        elif not upload.finished and upload.remaining == 0:
            self._end_of_body()
        return rest

    def _end_of_body(self) -> None:
        # The body is whole: it is checked and published even if the client goes away now.
        upload, self._upload = self._upload, None
        assert upload is not None
        self.state = State.RESPONDING
        self._cancel_timer()
        upload.finish().addCallbacks(self._stored, self._not_stored, callbackArgs=(upload,))

    def _stored(self, digest: str, upload: Upload) -> None:
        if self.state is State.CLOSING:
            return
        self._answer("OK", upload.size, wire.ok_line("stored", upload.size, digest))

    def _not_stored(self, failure: Failure) -> None:
        if self.state is State.CLOSING:
            return
        error = refusal_of(failure.value)
        if error is not None:
            self._error(error.code, str(error))
        else:
            log.failure(
                "{peer} {request}: upload failed", failure, peer=self.peer, request=self._request
            )
            self._error("internal", "the server could not store the file")

    def _upload_failed(self) -> None:
        """The body of a failed upload has been skipped: say why, carry on."""
        error, self._upload, self._upload_error = self._upload_error, None, None
        self.state = State.RESPONDING
        self._cancel_timer()
        if error is not None:
            self._error(error.code, str(error))
        else:
            self._error("internal", "the server could not write the file")

    def _login(self, request: wire.Login) -> None:
        portal = self.factory.portal
        if portal is None:
            self._error("bad-request", "this server has no accounts: no need to log in")
            return
        host = peer_key(self.transport.getPeer())
        wait = self.factory.limiter.wait(host, request.user)
        if wait:
            # One answer whether the network or the account must wait (docs/protocol.md).
            self._error("busy", f"too many failed logins from your address; wait {wait:.0f} s")
            return
        self.state = State.RESPONDING
        d = portal.login(password_credentials(request.user, request.password), None, IFilesAccount)
        d.addCallbacks(self._logged_in, self._login_failed, errbackArgs=(request.user, host))

    def _logged_in(self, result: tuple[Any, Any, Any]) -> None:
        _interface, account, _logout = result
        if self.state is State.CLOSING:
            return
        self.account = account
        log.info("{peer} logged in as {user}", peer=self.peer, user=account.name)
        self._respond(wire.ok_line("welcome", account.name), "OK")

    def _login_failed(self, failure: Failure, user: str, host: str) -> None:
        if not failure.check(*UNAUTHORIZED):
            log.failure("{peer} login: checker failed", failure, peer=self.peer)
        self.factory.limiter.failed(host, user)
        log.warn(
            "{peer} failed to log in as {user}", peer=self.peer, user=wire.escape_text(user[:64])
        )
        if self.state is not State.CLOSING:
            self._error("unauthorized", "bad user name or password")

    # --- LIST, streamed -------------------------------------------------------------------

    def _list(self, request: wire.List) -> None:
        """``OK list``, then the rows a batch at a time, then ``END <n>`` (docs/protocol.md)."""
        self._listing = self.account.store.open_listing(request.path)
        self._listed = 0
        self._list_bytes = 0
        self.state = State.RESPONDING
        self._arm("stall", self.limits.stall_timeout, self._stalled)
        self._list_send(wire.ok_line(wire.LIST_STATUS))

    def _list_send(self, data: bytes) -> None:
        """Write part of a listing; the next batch is read once the transport can take more."""
        self._list_bytes += len(data)
        write_paced(self.transport, data).addCallbacks(self._list_more, self._list_lost)

    def _list_more(self, _ignored: object = None) -> None:
        """Read the next batch.  A loop, not a recursion, when batches come back at once (a
        thread pool run inline, a socket that takes everything)."""
        if self._list_looping:
            self._list_again = True
            return
        self._list_looping = True
        try:
            self._list_again = True
            while self._list_again and self._listing is not None and self.state is State.RESPONDING:
                self._list_again = False
                self._progress(0)
                # At the cap, want one more all the same: is there more than the cap?
                want = max(1, min(self.limits.list_batch, self.limits.max_list - self._listed))
                d = self.factory.list_reads.run(self._listing.read, want, _list_row)
                d.addCallbacks(self._list_batch, self._list_failed)
        finally:
            self._list_looping = False

    def _list_batch(self, batch: ListBatch) -> None:
        """Send a batch.  At the cap, one more entry is asked for: if there is one, the listing
        ends ``truncated`` (the reader's look-ahead usually has it already)."""
        if self.state is State.CLOSING or self._listing is None:
            return
        room = self.limits.max_list - self._listed
        rows = batch.rows[:room]
        self._listed += len(rows)
        if len(batch.rows) > room:
            self._list_finish(b"".join(rows), wire.LIST_TRUNCATED)
        elif batch.end:
            self._list_finish(b"".join(rows), None)
        elif rows:
            self._list_send(b"".join(rows))
        else:  # only unlisted entries (temporaries, FIFOs) in this batch: read on
            self._list_more()

    def _list_failed(self, failure: Failure) -> None:
        """The directory could not be read on: end the listing, saying so."""
        if self.state is State.CLOSING or self._listing is None:
            return
        error = refusal_of(failure.value)
        if error is not None:
            log.warn(  # short of descriptors or memory: retryable, no traceback
                "{peer} {request}: listing stopped: {error}",
                peer=self.peer,
                request=self._request,
                error=wire.escape_text(str(error)),
            )
        else:
            log.failure(
                "{peer} {request}: listing failed", failure, peer=self.peer, request=self._request
            )
        self._list_finish(b"", wire.LIST_FAILED)

    def _list_finish(self, rows: bytes, reason: str | None) -> None:
        self._end_listing()
        outcome = "OK" if reason is None else f"OK {reason} at {self._listed} entries"
        self._answer(
            outcome, self._list_bytes + len(rows), rows, wire.list_end(self._listed, reason)
        )

    def _list_lost(self, _failure: Failure) -> None:
        self._end_listing()
        self._log("aborted: connection lost", self._list_bytes)

    def _end_listing(self) -> None:
        listing, self._listing = self._listing, None
        if listing is not None:
            listing.close()

    def _stat(self, request: wire.Stat) -> None:
        """Hashes are bounded per client address; a closed connection stops waiting (its
        Deferred is cancelled in connectionLost), which abandons a hash nobody else awaits."""
        self.state = State.RESPONDING
        owner = peer_key(self.transport.getPeer())
        d = self.account.store.stat(request.path, owner)
        if not d.called:
            self._hashing = d
        d.addCallbacks(self._stat_done, self._stat_failed, errbackArgs=(request,))

    def _stat_done(self, info: FileInfo) -> None:
        self._hashing = None
        if self.state is State.CLOSING:
            return
        fields = [f"type={info.kind}"]
        if info.size is not None:
            fields.append(f"size={info.size}")
        fields.append(f"mtime={wire.format_mtime(info.mtime)}")
        if info.sha256 is not None:
            fields.append(f"sha256={info.sha256}")
        self._respond(wire.ok_line(*fields), "OK")

    def _stat_failed(self, failure: Failure, request: wire.Stat) -> None:
        self._hashing = None
        if self.state is State.CLOSING:
            return
        error = refusal_of(failure.value)
        if error is not None:
            self._error(error.code, f"{error}: {request_path(request)}")
        else:
            log.failure(
                "{peer} {request}: hashing failed", failure, peer=self.peer, request=self._request
            )
            self._error("internal", "the server could not read the file")

    def _respond(self, data: bytes, outcome: str) -> None:
        self._answer(outcome, len(data), data)

    def _answer(self, outcome: str, nbytes: int, *pieces: bytes) -> None:
        """Send an answer; the next request is taken once the transport is ready for more."""
        self.state = State.RESPONDING
        write_paced(self.transport, *pieces).addCallbacks(
            lambda _: self._finished(outcome, nbytes),
            lambda _: self._log("aborted: connection lost", nbytes),
        )
        if self.state is State.RESPONDING:  # still held: the client is not reading
            self._arm("stall", self.limits.stall_timeout, self._stalled)

    def _error(self, code: str, text: str) -> None:
        self._respond(wire.err_line(code, text), f"ERR {code}")

    def _fail_and_close(self, code: str, text: str) -> None:
        line = wire.err_line(code, text)
        self.transport.write(line)
        self._log(f"ERR {code}", len(line))
        self._close()

    def _finished(self, outcome: str, nbytes: int) -> None:
        self._log(outcome, nbytes)
        if self.state is State.CLOSING:
            return
        self.state = State.WAITING
        self._cancel_timer()
        if not self._pumping:
            self._pump()

    def _log(self, outcome: str, nbytes: int) -> None:
        """The one event per transfer.  Its text is rendered here, braces doubled, so observers
        format a literal: twisted.logger's own template formatting was a third of the cost of
        logging a small GET (measured).  The fields stay in the event for structured observers.
        Past :data:`BAD_REQUESTS_LOGGED` bad requests a connection's are only counted."""
        if outcome == "ERR bad-request":
            self._bad_requests += 1
            if self._bad_requests > BAD_REQUESTS_LOGGED:
                return
        seconds = self.factory.clock.seconds() - self._started
        text = f"{self.peer} {self._request} -> {outcome} {nbytes} bytes in {seconds:.3f}s"
        log.info(
            text.replace("{", "{{").replace("}", "}}"),
            peer=self.peer,
            request=self._request,
            outcome=outcome,
            nbytes=nbytes,
            seconds=seconds,
        )

    def _close(self) -> None:
        self.state = State.CLOSING
        self._cancel_timer()
        self.transport.loseConnection()

    # --- input backpressure ---------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def _resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    # --- timers ---------------------------------------------------------------------------

    def _arm(self, kind: str, seconds: float, callback: Any) -> None:
        self._cancel_timer()
        self._timer_kind = kind
        self._timer = self.factory.clock.callLater(seconds, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._timer_kind = ""

    def _line_timed_out(self) -> None:
        self._timer = None
        self._request = "(incomplete request line)"
        self._started = self.factory.clock.seconds() - self.limits.line_timeout
        self._fail_and_close(
            "timeout", f"request line not complete within {self.limits.line_timeout:g} s"
        )

    def _idle_timed_out(self) -> None:
        self._timer = None
        self.transport.write(
            wire.err_line("timeout", f"idle for {self.limits.idle_timeout:g} s; closing")
        )
        self._close()

    def _stalled(self) -> None:
        self._timer = None
        log.info(
            "{peer} {request}: no progress for {seconds:g} s, dropping the connection",
            peer=self.peer,
            request=self._request,
            seconds=self.limits.stall_timeout,
        )
        self.state = State.CLOSING
        self.transport.abortConnection()  # type: ignore[attr-defined]


def _list_row(entry: Entry) -> bytes:
    """An entry as its LIST row (run in the thread pool, with the batch's reading)."""
    return wire.list_row(entry.kind, entry.size, entry.mtime, entry.name)


def refusal_of(exc: BaseException | None) -> PathError | None:
    """The refusal a failed request is answered with: its PathError, or busy for an OSError of
    exhausted resources; None for anything else (a bug: logged, answered internal)."""
    return exc if isinstance(exc, PathError) else exhausted(exc)


def request_path(request: wire.Request) -> str:
    """The path a request named, for an error message (``err_line`` escapes the whole text:
    escaping here too showed ``a\\b`` as ``a\\\\b``)."""
    return getattr(request, "path", "") or "/"


class FileServerFactory(LimitedFactory):
    """Builds :class:`FileServerProtocol` for one store; embeddable in any Twisted program.

    ``clock`` is the reactor (or a ``task.Clock`` in tests); it is used for timeouts only.
    """

    def __init__(
        self,
        store: IFileStore,
        clock: interfaces.IReactorTime,
        limits: Limits | None = None,
        uploads: Uploads | None = None,
        portal: Portal | None = None,
        anonymous: bool = False,
        limiter: LoginLimiter | None = None,
        anonymous_store: IFileStore | None = None,
    ) -> None:
        self.limits = limits or Limits()
        super().__init__(clock, self.limits.max_per_peer, self.limits.max_connections)
        self.store = store
        self.uploads = uploads  # None: a read-only server
        self.portal = portal  # with accounts (--auth): connections must LOGIN
        # not ``limiter or``: a LoginLimiter has a length, and a shared one is empty at first
        self.limiter = limiter if limiter is not None else LoginLimiter(clock.seconds)
        #: Shared by every connection's LIST: batches read in the thread pool at once.
        self.list_reads = defer.DeferredSemaphore(self.limits.max_list_reads)
        if portal is None:
            self.default_account: Any = Account("-", store, uploads)  # type: ignore[arg-type]
        elif anonymous:  # what the users file lets anonymous read (anonymous_store), else store
            anonymous_view = anonymous_store or store
            self.default_account = Account(ANONYMOUS, anonymous_view, None)  # type: ignore[arg-type]
        else:
            self.default_account = None

    def make_protocol(self, addr: interfaces.IAddress | None) -> Protocol:
        """A files protocol."""
        return FileServerProtocol(self)

    def refusal_message(self, reason: str) -> bytes:
        """``ERR busy <reason>``."""
        return wire.err_line("busy", reason)
