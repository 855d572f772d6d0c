"""Writing to a transport at once, and waiting until it has sent what it holds.

Twisted queues every ``transport.write`` for the next reactor turn, and joins what was queued
into one bytes object before sending it (a copy).  For a short answer on an idle connection that
is a wasted turn, a copy and two ``epoll_ctl`` calls.  :func:`send_now` hands the pieces to the
kernel in one ``sendmsg`` when Twisted's own buffer is empty, as asyncio does, and queues only
what the socket did not take.  :func:`send_file_now` does the same for a status line and a
file's bytes, the bytes with ``os.sendfile``: they never pass through Python.

:func:`write_paced` is the other half, backpressure: it writes an answer and fires once the
transport is ready for more, so a protocol answering pipelined requests holds the next answer
back while a client is not reading.  Without it, a client that sent 20 MB of ``HELP`` lines and
read nothing made the files server buffer 2.9 GB of answers (measured).

Each function takes the transport a protocol has: under the kernel's guard
(:mod:`tcpfiles.core.guard`) that is the guard, and the socket fast paths look beneath it (and
tell it that bytes moved, for its idle timeout), and beneath the PROXY layer of a ``haproxy:``
listener too (:mod:`tcpfiles.core.proxy`: past the header it only passes bytes on).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet import defer, error, interfaces, tcp
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpfiles.core.guard import GuardedProtocol, beneath
from tcpfiles.core.tls import is_tls_transport

__all__ = [
    "MAX_READ",
    "MIN_READ",
    "TransferStopped",
    "adapt_read_size",
    "buffered",
    "can_send_now",
    "close_now",
    "drained",
    "send_file_now",
    "send_now",
    "send_paced",
    "write_paced",
]


#: ``send``'s flag holding a segment for what follows: Linux's; elsewhere (macOS, the BSDs) none,
#: and the status line goes in a segment of its own.
_MORE = getattr(socket, "MSG_MORE", 0)
_SENDFILE = hasattr(os, "sendfile")


class TransferStopped(Exception):
    """The consumer went away (connection lost) before everything was sent."""


def buffered(transport: Any) -> int:
    """Bytes Twisted holds for ``transport`` and has not handed to the kernel (0 if unknown)."""
    data = getattr(transport, "dataBuffer", None)
    if data is None:
        return 0
    held: int = len(data) - transport.offset + transport._tempDataLen
    return held


def can_send_now(transport: Any) -> bool:
    """A plain TCP (or UNIX) transport with nothing queued and not closing.

    The caller must know that nothing else writes to the socket behind Twisted's back (a
    sendfile producer in the middle of a body): that is not visible from here.
    """
    return _idle_connection(transport) is not None


def _idle_connection(transport: Any) -> Any:
    """The plain TCP connection (a ``tcp.Connection``, whose methods are not typed) beneath
    ``transport`` where :func:`can_send_now` holds; else None."""
    connection = beneath(transport)
    if (
        isinstance(connection, tcp.Connection)  # not a TLS wrapper, not a test transport
        and not is_tls_transport(connection)
        and connection.connected
        and not connection.disconnecting
        and not len(connection.dataBuffer) - connection.offset + connection._tempDataLen
    ):
        return connection
    return None


#: Bounds of :func:`adapt_read_size`: Twisted's fixed read size, and the largest it grows to.
MIN_READ = 64 * 1024
MAX_READ = 1024 * 1024


def adapt_read_size(transport: Any, got: int) -> None:
    """Grow a TCP transport's read size while reads fill it, shrink it when they do not.

    Twisted reads at most 64 KiB per turn; a stream then costs a reactor turn and a send per
    64 KiB.  A fixed 1 MiB read would allocate 1 MiB for every 1 KiB message (round trips fell
    to a third, measured); doubling while each read fills the buffer and halving when one uses
    less than an eighth of it gives both.  The transport's write-side pause threshold is the
    same attribute, so a connection buffers at most ``MAX_READ`` before reading stops.
    """
    transport = beneath(transport)
    if not isinstance(transport, tcp.Connection):  # TLS wrappers, test transports: as they are
        return
    size = transport.bufferSize
    if got >= size and size < MAX_READ:
        transport.bufferSize = size * 2
    elif got < size // 8 and size > MIN_READ:
        transport.bufferSize = size // 2


def send_now(transport: Any, *pieces: bytes) -> bool:
    """Write ``pieces`` in order; True when all of them went to the kernel already.

    Where :func:`can_send_now` holds, one ``sendmsg`` (no joined copy); the rest, and anything
    on any other transport, goes through ``transport.write`` as usual.
    """
    connection = _idle_connection(transport)
    if connection is not None:
        return _sendmsg(transport, connection, pieces)
    for piece in pieces:  # through the guard, if any: it sees the activity
        transport.write(piece)
    return False


def _sendmsg(transport: Any, connection: Any, pieces: tuple[bytes, ...]) -> bool:
    """:func:`send_now` on ``connection``, the idle one beneath ``transport``."""
    if isinstance(transport, GuardedProtocol):
        transport.touch()  # the bytes go around it: still traffic
    try:
        sent = connection.socket.sendmsg(pieces)
    except OSError:
        # Would block: queue it all.  A real error: queue it all as well, and Twisted's own
        # write turn meets the error and closes the connection in its usual way.
        sent = 0
    for piece in pieces:
        if sent >= len(piece):
            sent -= len(piece)
            continue
        connection.write(piece[sent:] if sent else piece)
        sent = 0
    return buffered(connection) == 0


def send_file_now(transport: Any, head: bytes, fd: int, offset: int, count: int) -> int | None:
    """Send ``head``, then ``count`` bytes of the file ``fd`` from ``offset``, in this turn:
    the number of body bytes the kernel took (0 to ``count``), or None where this cannot be
    done (nothing sent: not an idle plain TCP connection, or a producer is registered), and
    copying the body is the way.

    ``head`` goes in one ``send`` with ``MSG_MORE``, so it shares a segment with the body, and
    the body goes with ``os.sendfile``: the kernel takes it from the page cache, where reading
    it with ``pread`` and writing it with ``sendmsg`` copied it twice through Python (for a 64
    KiB file, about 15 of 60 µs per request, measured: docs/performance.md).  What the socket
    did not take of ``head`` is queued on the transport (Twisted sends it first); the rest of
    the body is the caller's to send (a sendfile producer), after that.  Fewer bytes than
    ``count`` may also mean the file has shrunk: the caller's producer finds out.  A broken
    connection (``EPIPE``) sends nothing more, and Twisted's own next turn meets the error and
    closes.
    """
    connection = _idle_connection(transport)
    if connection is None or connection.producer is not None or not _SENDFILE:
        return None
    if isinstance(transport, GuardedProtocol):
        transport.touch()  # the bytes go around it: still traffic
    sock = connection.socket
    try:  # send: sendmsg of the one piece cost 4k instructions more per GET (callgrind)
        sent = sock.send(head, _MORE if count else 0)
    except OSError:
        sent = 0
    if sent < len(head):
        connection.write(head[sent:])  # queued: it goes first
        return 0
    if not count:
        return 0
    try:  # one call: fewer bytes than asked means the socket is full (or the file ended)
        return os.sendfile(sock.fileno(), fd, offset, count)
    except OSError:
        return 0  # would block, or broken: the caller's producer goes on (or meets the error)


#: What Twisted's reactor hands ``connectionLost`` for a connection closed in order (one, shared).
_CLOSED_CLEANLY = Failure(error.ConnectionDone())


def close_now(transport: Any) -> bool:
    """Close a plain TCP connection that has nothing left to send, now; False (nothing done)
    where that cannot be known, and ``loseConnection`` is the way.

    ``loseConnection`` with an empty buffer asks for a write turn, whose ``doWrite`` finds
    nothing to write, sends zero bytes and closes: three system calls (``epoll_ctl`` twice,
    an empty ``send``) and a reactor turn per connection.  This does what that turn does
    (stop reading and writing, ``connectionLost`` with a clean close: ``shutdown`` then
    ``close``, a FIN after what the kernel still holds), at once: the protocol's
    ``connectionLost`` runs before this returns, as Twisted's own ``loseConnection`` does
    on a connection whose write side is already shut.
    """
    transport = _idle_connection(transport)
    if transport is None:
        return False
    if (
        transport.producer is not None
        or transport._writeDisconnecting
        or transport._writeDisconnected
    ):
        return False
    transport.stopReading()
    transport.stopWriting()
    transport.connectionLost(_CLOSED_CLEANLY)
    return True


@implementer(interfaces.IPullProducer)
class _DrainWaiter:
    """A pull producer that writes nothing: Twisted asks it for more once its buffer is empty."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.done: defer.Deferred[None] = defer.Deferred()

    def resumeProducing(self) -> None:
        if self.done.called or buffered(self.transport):
            return  # the call made at registration, with data still queued: wait for the next
        self.transport.unregisterProducer()
        self.done.callback(None)

    def stopProducing(self) -> None:
        if not self.done.called:
            self.done.errback(TransferStopped("connection lost before the answer was sent"))


def drained(transport: Any) -> defer.Deferred[None]:
    """Fires once ``transport`` has handed everything queued to the kernel.

    Twisted asks a pull producer for more exactly then; a transport that cannot tell (a test
    transport, say) counts as drained now.  Fails with :class:`TransferStopped` if the
    connection is lost first.  The transport must have no other producer.
    """
    if not buffered(transport) or not hasattr(transport, "registerProducer"):
        return defer.succeed(None)
    waiter = _DrainWaiter(transport)
    transport.registerProducer(waiter, False)
    return waiter.done


@implementer(interfaces.IPushProducer)
class _PauseWatcher:
    """A push producer that writes nothing: it only hears when the transport wants a pause,
    and when it may go on again."""

    def __init__(self) -> None:
        self.paused = False
        self.done: defer.Deferred[None] = defer.Deferred()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if not self.done.called:
            self.done.callback(None)

    def stopProducing(self) -> None:
        if not self.done.called:
            self.done.errback(TransferStopped("connection lost before the answer was sent"))


def write_paced(transport: Any, *pieces: bytes) -> defer.Deferred[None]:
    """Write ``pieces``; fires once the transport is ready for the next answer.

    On an idle plain TCP connection the pieces go to the kernel at once (:func:`send_now`);
    what the socket did not take is waited for (:func:`drained`).  On any other transport (TLS)
    the write happens with a push producer registered, so the transport says whether it now
    holds more than its buffer size; if it does, the Deferred fires when it has drained.
    Fails with :class:`TransferStopped` if the connection is lost first.  The transport must
    have no other producer.
    """
    written = send_paced(transport, *pieces)
    return defer.succeed(None) if written is None else written


def send_paced(transport: Any, *pieces: bytes) -> defer.Deferred[None] | None:
    """:func:`write_paced`, except that it returns None, and makes no Deferred, when the
    transport is ready for more at once (an idle plain TCP connection took the pieces whole:
    the usual answer)."""
    connection = _idle_connection(transport)
    if connection is not None:
        return None if _sendmsg(transport, connection, pieces) else drained(transport)
    if not hasattr(transport, "registerProducer") or getattr(transport, "producer", None):
        for piece in pieces:
            transport.write(piece)
        return None
    watcher = _PauseWatcher()
    transport.registerProducer(watcher, True)
    for piece in pieces:
        transport.write(piece)
    if watcher.done.called:  # the connection was already gone
        return watcher.done
    if watcher.paused:
        watcher.done.addCallback(lambda _: transport.unregisterProducer())
        return watcher.done
    transport.unregisterProducer()
    return None
