"""Zero-copy file bodies: ``os.sendfile`` from a pull producer, on plain TCP only.

The kernel copies the file straight to the socket: no bytes pass through Python, memory stays
flat, and each reactor turn moves up to :data:`PER_TURN` bytes.  ``TCP_CORK`` is set before the
status line and cleared after the body, so the status line and the body share full segments
(without it every send ends in a small leftover segment).

How it fits stock Twisted (see ZERO-COPY.md in the shared notes): Twisted asks a pull producer for
more only when its own write buffer is empty.  The first call comes at once, while the status line
may still be in that buffer, so it only asks for a write turn; every later call sends with
``sendfile`` until the socket would block, and asks for the next write turn itself (otherwise
Twisted would close or half-close as soon as *its* buffer is empty, before the file has gone).

With a :class:`~tcpfiles.core.rates.Pace` (a rate limit), each turn hands the kernel at most
what the buckets granted (``sendfile``'s count); when they hold nothing the producer does not ask
for a write turn, and their callback (a timer of the injected clock) asks for it again.

:func:`sendfile_possible` says when it may be used: a plain TCP (or UNIX) transport, not TLS (the
raw socket is reachable under TLS, and sendfile would put plaintext into the stream), no other
producer, not closing.  Elsewhere the copying :class:`FileBodyProducer` is used.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, interfaces
from zope.interface import implementer

from tcpfiles.core.rates import Pace
from tcpfiles.core.tls import is_tls_transport
from tcpfiles.tree.producer import FileShrank, TransferStopped

__all__ = ["PER_TURN", "SendfileProducer", "cork", "sendfile_possible"]

#: Bytes handed to the kernel per reactor turn, at most.
PER_TURN = 4 << 20
_CORK = getattr(socket, "TCP_CORK", None)


def sendfile_possible(transport: Any) -> bool:
    """Whether a body may go out with ``os.sendfile`` on this transport."""
    if not hasattr(os, "sendfile") or is_tls_transport(transport):
        return False
    if getattr(transport, "producer", None) is not None:
        return False
    if getattr(transport, "disconnecting", True):
        return False
    handle = getattr(transport, "getHandle", None)
    if handle is None:
        return False
    sock = handle()
    return isinstance(sock, socket.socket) and sock.type == socket.SOCK_STREAM


def cork(transport: Any, on: bool) -> None:
    """Set (hold partial segments) or clear (flush) ``TCP_CORK``, where there is one."""
    if _CORK is None:
        return
    sock = transport.getHandle()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1 if on else 0)
        except OSError:
            pass


@implementer(interfaces.IPullProducer)
class SendfileProducer:
    """Send ``count`` bytes of ``fd`` from ``offset`` with ``os.sendfile``; does not close ``fd``.

    The same interface as :class:`~tcpfiles.tree.producer.FileBodyProducer`.
    """

    def __init__(
        self,
        fd: int,
        offset: int,
        count: int,
        per_turn: int = PER_TURN,
        on_progress: Callable[[int], None] | None = None,
        pace: Pace | None = None,
        on_wait: Callable[[bool], None] | None = None,
    ) -> None:
        self.fd = fd
        self.position = offset
        self.remaining = count
        self.sent = 0
        self.per_turn = per_turn
        self.on_progress = on_progress
        self._transport: Any = None
        self._socket_fd = -1
        self._first = True
        self._pace = pace
        self._allowed = 0  # granted by the pace and not sent yet
        self.on_wait = on_wait  # told when waiting for the pace starts (True) and ends (False)
        self._done: defer.Deferred[int] = defer.Deferred()

    def begin(self, transport: Any) -> defer.Deferred[int]:
        """Start; fires with the byte count once the kernel has taken every byte."""
        self._transport = transport
        self._socket_fd = transport.getHandle().fileno()
        transport.registerProducer(self, False)
        return self._done

    def resumeProducing(self) -> None:
        """Twisted's buffer is empty: hand the kernel the next part of the file."""
        transport = self._transport
        if transport is None or self._done.called:
            return
        if self._first:  # the status line may still be buffered: let it go first
            self._first = False
            transport.startWriting()
            return
        limit = self.per_turn
        if self._pace is not None:
            limit = self._allowance()
            if not limit:
                return  # no write turn until the buckets call _granted
        this_turn = 0
        while self.remaining and this_turn < limit:
            try:
                n = os.sendfile(
                    self._socket_fd,
                    self.fd,
                    self.position,
                    min(self.remaining, limit - this_turn),
                )
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._fail(TransferStopped(f"send failed: {exc.strerror}"), abort=True)
                return
            if n == 0:
                self._fail(FileShrank(f"file ended {self.remaining} bytes early"))
                return
            self.position += n
            self.remaining -= n
            self.sent += n
            this_turn += n
        if this_turn and self.on_progress is not None:
            self.on_progress(this_turn)
        if self.remaining:
            if self._pace is not None:
                self._allowed -= this_turn
                if not self._allowance():
                    return  # _granted asks for the write turn
            transport.startWriting()  # come back when the socket can take more
            return
        self._transport = None
        transport.unregisterProducer()
        transport.startWriting()  # a close or half-close asked for meanwhile can happen now
        self._done.callback(self.sent)

    def _allowance(self) -> int:
        """What the pace lets us send now: what is left of its grant, else a new one (0: we
        wait for :meth:`_granted`)."""
        assert self._pace is not None
        if not self._allowed and not self._pace.waiting:
            self._allowed = self._pace.request(min(self.remaining, self.per_turn), self._granted)
            if not self._allowed and self.on_wait is not None and self._pace.waiting:
                self.on_wait(True)
        return self._allowed

    def _granted(self, allowed: int) -> None:
        """The buckets have ``allowed`` bytes for us: ask for a write turn to send them."""
        self._allowed = allowed
        if self.on_wait is not None:
            self.on_wait(False)
        if self._transport is not None and not self._done.called:
            self._transport.startWriting()

    def pauseProducing(self) -> None:
        """Pull producers are not paused."""

    def stopProducing(self) -> None:
        """The connection is gone."""
        if self._pace is not None:
            self._pace.cancel()
        if not self._done.called:
            self._transport = None
            self._done.errback(TransferStopped(f"stopped after {self.sent} bytes"))

    def _fail(self, error: Exception, abort: bool = False) -> None:
        if self._pace is not None:
            self._pace.cancel()
        transport, self._transport = self._transport, None
        transport.unregisterProducer()
        if abort:  # the socket is broken (EPIPE, ECONNRESET): do not wait to notice
            transport.abortConnection()
        self._done.errback(error)
