"""Streaming a byte range of an open file to a transport, with backpressure.

:class:`FileBodyProducer` is a pull producer: the transport asks for more only when its buffer
has drained, so a reader that stops reading costs one chunk of memory at most.  Each turn reads
one large chunk with ``pread`` (the descriptor's offset is never used, so the same file may be
served to many connections), and the transport's per-write limit is raised to match, so one
reactor turn moves one chunk instead of Twisted's default 128 KiB.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, interfaces
from zope.interface import implementer

#: Bytes read per step on a plain TCP transport (only with --no-sendfile: sendfile is used there).
CHUNK_SIZE = 1024 * 1024
#: Bytes read per step under TLS, where Twisted's own transport limits are kept: measured, bigger
#: chunks or raised limits only lengthen the pauses between encrypting and sending.
TLS_CHUNK_SIZE = 64 * 1024


def raise_limits(transport: Any, step: int) -> None:
    """On a plain TCP transport, send ``step`` bytes per turn (Twisted: 128 KiB); not under TLS."""
    from tcpfiles.tls import is_tls_transport

    if is_tls_transport(transport) or not hasattr(transport, "SEND_LIMIT"):
        return
    if transport.SEND_LIMIT < step:
        transport.SEND_LIMIT = step


class FileShrank(Exception):
    """The file got shorter while it was being sent: the promised size cannot be kept."""


class TransferStopped(Exception):
    """The consumer went away (connection lost) before the body was sent."""


@implementer(interfaces.IPullProducer)
class FileBodyProducer:
    """Send ``count`` bytes of ``fd`` from ``offset`` to a consumer; does not close ``fd``."""

    def __init__(
        self,
        fd: int,
        offset: int,
        count: int,
        chunk_size: int = CHUNK_SIZE,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.fd = fd
        self.position = offset
        self.remaining = count
        self.sent = 0
        self.chunk_size = chunk_size
        self.on_progress = on_progress
        self._consumer: interfaces.IConsumer | None = None
        self._done: defer.Deferred[int] = defer.Deferred()

    def begin(self, consumer: interfaces.IConsumer) -> defer.Deferred[int]:
        """Start sending; the Deferred fires with the byte count when every byte is written."""
        self._consumer = consumer
        raise_limits(consumer, self.chunk_size)
        consumer.registerProducer(self, False)
        return self._done

    def resumeProducing(self) -> None:
        """Write the next chunk (the transport's buffer is empty)."""
        if self._consumer is None or self._done.called:
            return
        if self.remaining == 0:
            # Done only once Twisted's buffer has drained again: the next request of a client
            # that pipelines and never reads waits here, instead of piling answers up.
            self._finish(None)
            return
        try:
            data = os.pread(self.fd, min(self.chunk_size, self.remaining), self.position)
        except OSError as exc:
            self._finish(exc)
            return
        if not data:
            self._finish(FileShrank(f"file ended {self.remaining} bytes early"))
            return
        self.position += len(data)
        self.remaining -= len(data)
        self.sent += len(data)
        self._consumer.write(data)
        if self.on_progress is not None:
            self.on_progress(len(data))

    def pauseProducing(self) -> None:
        """Pull producers are not paused; present for transports that call it anyway."""

    def stopProducing(self) -> None:
        """The connection is gone: give up."""
        if not self._done.called:
            self._consumer = None
            self._done.errback(TransferStopped(f"stopped after {self.sent} bytes"))

    def _finish(self, error: Exception | None) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.unregisterProducer()
        if error is None:
            self._done.callback(self.sent)
        else:
            self._done.errback(error)
