"""GET and RESUME: ``OK <n>``, then n bytes of the file, from the offset asked for.

A short body on an idle plain TCP connection goes out at once, the status line with ``send``
and the body with ``os.sendfile`` (:func:`~tcpfiles.core.sending.send_file_now`); what the
socket did not take is sent by a producer.  Elsewhere (TLS, ``--no-sendfile``) it is read whole
and written with its status line.  A longer one is streamed by a producer while the connection is
:class:`Sending`: with ``os.sendfile`` where the transport allows it, else copied chunk by
chunk, with backpressure either way.  Under a rate limit (``--rate``, an account's ``rate=``)
every body goes through a producer, paced by the buckets.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from tcpfiles.core.rates import Pace
from tcpfiles.core.sending import send_file_now
from tcpfiles.files import wire
from tcpfiles.files.limits import SMALL_BODY
from tcpfiles.files.states import RESPONDING, Stalling
from tcpfiles.tree.producer import FileBodyProducer, FileShrank, TransferStopped
from tcpfiles.tree.store import OpenedFile
from tcpfiles.tree.zerocopy import SendfileProducer, cork, sendfile_possible

if TYPE_CHECKING:
    from tcpfiles.files.protocol import FileServerProtocol

log = Logger(namespace="tcpfiles.files")


def get(conn: FileServerProtocol, request: wire.Get) -> None:
    """Send the file from ``request.offset`` on; a body is sent as the file is when opened."""
    opened = conn.account.store.open_file(request.path)
    if request.offset > opened.size:
        opened.close()
        conn.error(
            "bad-request",
            f"offset {request.offset} is past the end of the file ({opened.size} bytes)",
        )
        return
    count = opened.size - request.offset
    pace = conn.pace()  # None without a rate limit: small bodies go out at once
    if count > SMALL_BODY or (count and pace is not None):
        sending = Sending(conn, opened)
        conn.enter(sending)
        sending.begin(request.offset, count, pace)
        return
    if count and conn.limits.zero_copy:
        try:
            sent = send_file_now(
                conn.transport, wire.count_line(count), opened.fd, request.offset, count
            )
        except BaseException:
            opened.close()  # a kept file's count of readers goes down too
            raise
        if sent == count:
            opened.close()
            conn.finished("OK", count)
            return
        if sent is not None:  # the socket is full: a producer sends the rest
            sending = Sending(conn, opened)
            conn.enter(sending)
            sending.carry_on(request.offset, count, sent)
            return
    try:
        data = os.pread(opened.fd, count, request.offset) if count else b""
    finally:
        opened.close()
    # Nothing is sent yet: a file that shrank since its lstat is served as it is now (sent
    # with sendfile, above, it ends the connection: the size was promised).
    conn.answer("OK", len(data), wire.count_line(len(data)), data)


class Sending(Stalling):
    """A file's body going out; the next request waits until it has all been taken."""

    __slots__ = ("opened", "producer", "count", "before")

    name = RESPONDING

    def __init__(self, conn: FileServerProtocol, opened: OpenedFile) -> None:
        super().__init__(conn)
        self.opened = opened
        self.producer: FileBodyProducer | SendfileProducer | None = None
        self.count = 0
        self.before = 0  # of the body, sent before the producer began

    def transferred(self) -> tuple[int, int]:
        """Bytes of the body sent so far, of how many (``tcpfiles status``)."""
        return self.before + (0 if self.producer is None else self.producer.sent), self.count

    def carry_on(self, offset: int, count: int, sent: int) -> None:
        """The status line (``count`` bytes from ``offset``) and ``sent`` bytes of the body went
        out already (:func:`~tcpfiles.core.sending.send_file_now`): send the rest with
        ``sendfile``, which that function could use, so this transport allows it."""
        self.start_timer()
        self.before, self.count = sent, count
        producer = SendfileProducer(
            self.opened.fd, offset + sent, count - sent, on_progress=self.progress
        )
        self._start(producer, corked=False)

    def begin(self, offset: int, count: int, pace: Pace | None = None) -> None:
        """The status line, then the body from ``offset`` (as fast as ``pace`` allows)."""
        conn, transport = self.conn, self.conn.transport
        zero_copy = conn.limits.zero_copy and sendfile_possible(transport)
        if zero_copy:
            cork(transport, True)  # the status line waits for the body's first segment
        transport.write(wire.count_line(count))
        self.start_timer()
        producer: FileBodyProducer | SendfileProducer
        if zero_copy:
            producer = SendfileProducer(
                self.opened.fd,
                offset,
                count,
                on_progress=self.progress,
                pace=pace,
                on_wait=self.rate_wait,
            )
        else:
            producer = FileBodyProducer(
                self.opened.fd,
                offset,
                count,
                conn.limits.chunk_size,
                self.progress,
                clock=conn.clock,
                pace=pace,
                on_wait=self.rate_wait,
            )
        self.count = count
        self._start(producer, corked=zero_copy)

    def _start(self, producer: FileBodyProducer | SendfileProducer, corked: bool) -> None:
        self.producer = producer
        try:
            d = producer.begin(self.conn.transport)
        except BaseException:
            self.opened.close()  # _done, which closes it, is never called
            raise
        if corked:
            d.addBoth(self._uncork)
        d.addBoth(self._done, producer)

    def rate_wait(self, waiting: bool) -> None:
        """The body waits for its turn at the rate (True), or has it (False): waiting is not
        stalling, so the stall timer stops meanwhile (as an upload's does)."""
        if waiting:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
        elif self.current:
            self.start_timer()

    def _uncork(self, result: Any) -> Any:
        transport = self.conn.transport
        if transport.connected and not transport.disconnected:
            cork(transport, False)  # flush the last partial segment now
        return result

    def _done(self, result: int | Failure, producer: FileBodyProducer | SendfileProducer) -> None:
        conn = self.conn
        self.opened.close()
        if not isinstance(result, Failure):
            conn.finished("OK", self.before + result)
            return
        sent = self.before + producer.sent
        if result.check(TransferStopped):
            conn.log_outcome("aborted: connection lost", sent)
            return
        reason = "file shrank" if result.check(FileShrank) else "read error"
        conn.log_outcome(f"aborted: {reason}", sent)
        if result.check(OSError):
            log.failure(
                "{peer} {request}: read failed", result, peer=conn.peer, request=conn.request_text
            )
        conn.abort()  # the promised size cannot be kept
