"""PUT and REPLACE: checked first (``OK send <size>``), then the body, then ``OK stored``.

The connection is :class:`Receiving` while the body comes in (to a hidden temporary, see
:mod:`tcpfiles.tree.uploads`), :class:`Discarding` the rest of a body it could not write, and
:class:`Storing` while the whole body is checked, flushed and published.

An account's storage quota is checked with the rest, before the body is asked for.  Under a rate
limit, what arrives is counted against the buckets; once they are empty the connection stops
reading until they have refilled: the stall timer stops meanwhile, and a producer that moves
nothing is registered, so that the kernel's idle timeout sees work in progress (waiting is
neither stalling nor idling).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import interfaces
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpfiles.core.rates import Pace
from tcpfiles.files import wire
from tcpfiles.files.refusals import answer_failure
from tcpfiles.files.states import RECEIVING, RESPONDING, Stalling, State, while_current
from tcpfiles.tree.paths import PathError
from tcpfiles.tree.uploads import Upload

if TYPE_CHECKING:
    from tcpfiles.files.protocol import FileServerProtocol

log = Logger(namespace="tcpfiles.files")


@implementer(interfaces.IPushProducer)
class _RateWait:
    """Registered on the transport while an upload waits for its allowance: work in progress
    to the kernel's guard (tcpfiles.core.guard), which does not time such a connection out."""

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


_RATE_WAIT = _RateWait()


def put(conn: FileServerProtocol, request: wire.Put) -> None:
    """Check everything (a refusal raises), then ask for the body."""
    account = conn.account
    quota = getattr(account, "quota", None)
    upload = account.uploads.begin(
        request.path, request.size, request.sha256, request.replace, quota
    )
    conn.transport.write(wire.send_line(request.size))
    receiving = Receiving(conn, upload, conn.pace())
    conn.enter(receiving)
    receiving.start_timer()
    # A client that sent the body without waiting for "OK send": it is already buffered.
    receiving.body(conn.lines.take(min(upload.remaining, conn.lines.pending)))


class Receiving(Stalling):
    """An upload's body coming in; what follows it is the next requests."""

    __slots__ = ("upload", "pace", "placeholder")

    name = RECEIVING

    def __init__(self, conn: FileServerProtocol, upload: Upload, pace: Pace | None = None) -> None:
        super().__init__(conn)
        self.upload = upload
        self.pace = pace
        #: Whether we registered _RATE_WAIT: under TLS the transport holds it wrapped (Twisted's
        #: _ProducerMembrane), so ``transport.producer is _RATE_WAIT`` cannot tell.
        self.placeholder = False

    def transferred(self) -> tuple[int, int]:
        """Bytes of the body received so far, of how many (``tcpfiles status``)."""
        return self.upload.received, self.upload.size

    def data_received(self, data: bytes) -> None:
        rest = self.body(data)
        self.conn.lines.feed(rest)
        self.conn.pump()

    def body(self, data: bytes) -> bytes:
        """Write what belongs to the body; return what follows it."""
        self.progress()
        upload = self.upload
        body, rest = data[: upload.remaining], data[upload.remaining :]
        if body and self.pace is not None:
            self.paced(len(body))
        if body:
            try:
                upload.write(body)
            except (PathError, OSError) as exc:
                upload.abort()
                error = exc if isinstance(exc, PathError) else None
                skipping = Discarding(self.conn, upload, upload.remaining - len(body), error)
                self.conn.enter(skipping)
                skipping.start_timer()
                if skipping.remaining == 0:
                    skipping.say_why()
                return rest
        if upload.remaining == 0:  # whole: checked and published even if the client goes now
            storing = Storing(self.conn, upload)
            self.conn.enter(storing)
            upload.finish().addCallbacks(storing.stored, storing.not_stored)
        return rest

    def paced(self, nbytes: int) -> None:
        """Count ``nbytes`` against the rate; out of allowance, stop reading until it comes."""
        pace = self.pace
        assert pace is not None
        pace.spend(nbytes)
        if self.upload.remaining <= nbytes or pace.waiting or not pace.in_debt():
            return  # the body is complete, or reading is already paused, or there is room
        self.conn.pause_reading()
        if pace.request(1, self.allowed):  # an allowance at once after all
            self.conn.resume_reading()
            return
        if self.timer is not None:  # waiting for the rate is not stalling...
            self.timer.cancel()
            self.timer = None
        transport = self.conn.transport
        if getattr(transport, "producer", None) is None:  # ...nor idling
            transport.registerProducer(_RATE_WAIT, True)
            self.placeholder = True

    def allowed(self, _nbytes: int) -> None:
        """The buckets have room again: read on."""
        if self.current:
            self._waited()
            self.start_timer()

    def _waited(self) -> None:
        """Done waiting for the rate: read again."""
        if self.placeholder:
            self.placeholder = False
            self.conn.transport.unregisterProducer()
        self.conn.resume_reading()

    def leave(self) -> None:
        """Moving on (or gone): stop waiting for the rate; a connection going on reads again."""
        pace = self.pace
        waiting = pace is not None and pace.waiting
        if pace is not None and waiting:
            pace.cancel()
        if self.current and (waiting or self.placeholder):
            self._waited()
        super().leave()

    def input_ended(self) -> None:
        """The body can never be completed now: nothing is stored."""
        self.conn.close()
        self.upload.abort()
        self.conn.log_outcome("aborted: input ended mid-body", self.upload.received)

    def lost(self) -> None:
        """Cut off mid-body: the temporary goes (then the log says so)."""
        self.leave()
        self.upload.abort()
        self.conn.log_outcome("aborted: connection lost", self.upload.received)


class Discarding(Receiving):
    """The rest of a body that could not be written, skipped; then the connection says why."""

    __slots__ = ("remaining", "error")

    def __init__(
        self, conn: FileServerProtocol, upload: Upload, remaining: int, error: PathError | None
    ) -> None:
        super().__init__(conn, upload)
        self.remaining = remaining
        self.error = error

    def body(self, data: bytes) -> bytes:
        self.progress()
        skipped, rest = data[: self.remaining], data[self.remaining :]
        self.remaining -= len(skipped)
        if self.remaining == 0:
            self.say_why()
        return rest

    def say_why(self) -> None:
        """The body has been skipped: answer the refusal; the connection goes on."""
        if self.error is not None:
            self.conn.error(self.error.code, str(self.error))
        else:
            self.conn.error("internal", "the server could not write the file")


class Storing(State):
    """A whole body being checked, flushed and published (in the thread pool)."""

    __slots__ = ("upload",)

    name = RESPONDING

    def __init__(self, conn: FileServerProtocol, upload: Upload) -> None:
        super().__init__(conn)
        self.upload = upload

    @while_current
    def stored(self, digest: str) -> None:
        """On disk under its name."""
        self.conn.answer("OK", self.upload.size, wire.stored_line(self.upload.size, digest))

    @while_current
    def not_stored(self, failure: Failure) -> None:
        """A refusal (mismatch, exists, too large...), or ``ERR internal``."""
        answer_failure(self.conn, failure, "upload", "the server could not store the file")
