"""Streaming a byte range of an open file to a transport, with backpressure.

:class:`FileBodyProducer` reads the file with ``pread`` (the descriptor's offset is never used, so
the same file may be served to many connections) and writes it in large chunks.  How it is driven
depends on the transport:

- plain TCP: a pull producer.  Twisted asks for the next chunk when its write buffer is empty,
  from the same reactor turn that emptied it; the transport's per-write limit is raised to the
  chunk size so one turn moves one chunk instead of Twisted's default 128 KiB.
- TLS: a push producer.  Twisted's TLS wrapper drives a pull producer through a cooperator, one
  scheduled call and one extra reactor turn per chunk (measured: 0.77x the throughput of
  ``twistd web``, which pays the same).  Pushed, the next chunk is encrypted as soon as the TCP
  transport resumes us, in the turn that drained its buffer; the transport pauses us again as
  soon as it holds more than its buffer size, so a reader that stops reading costs one chunk.

Either way the Deferred fires only once the transport is ready for more: the next response of a
client that pipelines requests and never reads waits, instead of piling answers up in memory.

With a :class:`~tcpfiles.core.rates.Pace` (``--rate``, an account's ``rate=``) each chunk is at
most what the buckets grant; when they hold nothing the producer writes nothing and waits for
their callback (a timer of the injected clock), the transport idle meanwhile.  Without one the
path is as it was: one test per chunk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, interfaces
from zope.interface import implementer

from tcpfiles.core.rates import Pace
from tcpfiles.core.sending import TransferStopped
from tcpfiles.core.tls import is_tls_transport

__all__ = ["FileBodyProducer", "FileShrank", "TransferStopped"]

#: Bytes read per step on a plain TCP transport (only with --no-sendfile: sendfile is used there).
CHUNK_SIZE = 1024 * 1024
#: Bytes read per step under TLS, where Twisted's own transport limits are kept: measured, bigger
#: chunks or raised limits only lengthen the pauses between encrypting and sending.
TLS_CHUNK_SIZE = 64 * 1024
#: Chunks written in one go when the transport does not pause a push producer (it normally does
#: after the first); past this the rest waits for the next reactor turn.
PUSH_BURST = 4


class FileShrank(Exception):
    """The file got shorter while it was being sent: the promised size cannot be kept."""


@implementer(interfaces.IPullProducer, interfaces.IPushProducer)
class FileBodyProducer:
    """Send ``count`` bytes of ``fd`` from ``offset`` to a consumer; does not close ``fd``."""

    def __init__(
        self,
        fd: int,
        offset: int,
        count: int,
        chunk_size: int = CHUNK_SIZE,
        on_progress: Callable[[int], None] | None = None,
        clock: interfaces.IReactorTime | None = None,
        pace: Pace | None = None,
        on_wait: Callable[[bool], None] | None = None,
    ) -> None:
        self.fd = fd
        self.position = offset
        self.remaining = count
        self.sent = 0
        self.chunk_size = chunk_size
        self.on_progress = on_progress
        self.streaming = False
        self._consumer: interfaces.IConsumer | None = None
        self._done: defer.Deferred[int] = defer.Deferred()
        self._paused = False
        self._producing = False
        self._later: Any = None
        self._clock = clock
        self._pace = pace
        #: Told True when the body starts waiting for the pace's grant, False when it comes
        #: (the download's stall timer stops meanwhile: waiting in turn is not stalling).
        self.on_wait = on_wait

    def begin(self, consumer: interfaces.IConsumer) -> defer.Deferred[int]:
        """Start sending; the Deferred fires with the byte count when every byte is written."""
        self._consumer = consumer
        if is_tls_transport(consumer):
            if self._clock is None:  # a burst of pushed chunks yields a turn through it
                raise ValueError("a FileBodyProducer needs a clock to send over TLS")
            self.streaming = True
            self.chunk_size = min(self.chunk_size, TLS_CHUNK_SIZE)
            consumer.registerProducer(self, True)
            self._push()
        else:
            # One chunk per turn, not Twisted's 128 KiB (plain TCP only: under TLS it is kept).
            if getattr(consumer, "SEND_LIMIT", self.chunk_size) < self.chunk_size:
                consumer.SEND_LIMIT = self.chunk_size  # type: ignore[attr-defined]
            consumer.registerProducer(self, False)
        return self._done

    def resumeProducing(self) -> None:
        """Pull: the transport's buffer is empty.  Push: the transport can take more again."""
        if self.streaming:
            self._paused = False
            self._push()
        elif self._consumer is not None and not self._done.called:
            self._step()

    def pauseProducing(self) -> None:
        """Push: the transport holds enough; wait for :meth:`resumeProducing`."""
        self._paused = True

    def stopProducing(self) -> None:
        """The connection is gone: give up."""
        if not self._done.called:
            self._consumer = None
            self._cancel_later()
            if self._pace is not None:
                self._pace.cancel()
            self._done.errback(TransferStopped(f"stopped after {self.sent} bytes"))

    def _push(self) -> None:
        """Write chunks until the transport pauses us (normally after one) or the body is out."""
        self._cancel_later()
        if self._producing:  # resumed from inside our own write
            return
        self._producing = True
        try:
            burst = PUSH_BURST
            while not self._paused and self._consumer is not None and not self._done.called:
                if self._pace is not None and self._pace.waiting:
                    return  # its grant resumes us
                if burst == 0:
                    assert self._clock is not None  # begin() checked it
                    self._later = self._clock.callLater(0, self._push)
                    return
                burst -= 1
                self._step()
        finally:
            self._producing = False

    def _step(self) -> None:
        """Write the next chunk, or finish once every byte has been handed over."""
        if self.remaining == 0:
            # Done only once the transport is ready for more again: the next request of a
            # client that pipelines and never reads waits here, instead of piling answers up.
            self._finish(None)
            return
        wanted = min(self.chunk_size, self.remaining)
        if self._pace is not None:
            if self._pace.waiting:  # asked again (the write turn after registering): still so
                return
            wanted = self._pace.request(wanted, self._granted)
            if not wanted:
                if self.on_wait is not None and self._pace.waiting:
                    self.on_wait(True)
                return  # nothing written: the transport asks no more until _granted writes
        self._send(wanted)

    def _granted(self, allowed: int) -> None:
        """The buckets have ``allowed`` bytes for us: send them, and go on if pushing."""
        if self.on_wait is not None:
            self.on_wait(False)
        if self._consumer is None or self._done.called:
            return
        self._send(allowed)
        if self.streaming:
            self._push()

    def _send(self, wanted: int) -> None:
        """Read and write the next ``wanted`` bytes."""
        try:
            data = os.pread(self.fd, wanted, self.position)
        except OSError as exc:
            self._finish(exc)
            return
        if not data:
            self._finish(FileShrank(f"file ended {self.remaining} bytes early"))
            return
        self.position += len(data)
        self.remaining -= len(data)
        self.sent += len(data)
        assert self._consumer is not None
        self._consumer.write(data)
        if self.on_progress is not None:
            self.on_progress(len(data))

    def _cancel_later(self) -> None:
        if self._later is not None and self._later.active():
            self._later.cancel()
        self._later = None

    def _finish(self, error: Exception | None) -> None:
        consumer, self._consumer = self._consumer, None
        self._cancel_later()
        if self._pace is not None:
            self._pace.cancel()
        if consumer is not None:
            consumer.unregisterProducer()
        if error is None:
            self._done.callback(self.sent)
        else:
            self._done.errback(error)
