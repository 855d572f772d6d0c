"""What :meth:`FilesClient.put <tcpfiles.files.client.FilesClient.put>` uploads: a local file
given by its path, a binary file object or a descriptor, with its size and sha256.

The PUT line announces the size and the sha256 before the body, so the file is read twice: once
to hash it, then to send it.  :func:`digest_of` hashes in the reactor's thread pool (past
:data:`INLINE_HASH_LIMIT` bytes), one megabyte at a time, and stops early if the reactor shuts
down or its Deferred is cancelled; sending reads with ``pread`` from a descriptor, or
sequentially from a file object that has none (``io.BytesIO``).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import threading
from collections.abc import Callable
from typing import IO, Any

from twisted.internet import defer, interfaces, threads
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpfiles.core.sending import TransferStopped
from tcpfiles.tree.producer import FileBodyProducer

__all__ = [
    "HASH_CHUNK",
    "INLINE_HASH_LIMIT",
    "Source",
    "UploadSource",
    "digest_of",
    "open_source",
]

#: What can be uploaded: a path (``str`` or ``os.PathLike``), a binary file object open for
#: reading (uploaded from its current position to its end), or a descriptor (from offset 0).
Source = str | os.PathLike[str] | IO[bytes] | int

#: Bytes read per step while hashing, and per write while sending a file object.
HASH_CHUNK = 1 << 20
#: Sources up to this size are hashed at once on the calling thread (it takes well under a
#: millisecond); bigger ones in the reactor's thread pool, when the reactor has one.
INLINE_HASH_LIMIT = 256 * 1024


class UploadSource:
    """An opened :data:`Source`: ``size`` bytes from ``start``, read by descriptor (``fd``) or
    from a file object (``reader``).  :meth:`close` closes what :func:`open_source` opened."""

    def __init__(
        self,
        size: int,
        start: int = 0,
        fd: int | None = None,
        reader: IO[bytes] | None = None,
        owned: bool = False,
    ) -> None:
        self.size = size
        self.start = start
        self.fd = fd
        self.reader = reader
        self.seekable = reader is None or reader.seekable()
        self._owned = owned  # the descriptor is ours to close

    def sha256(self, stop: threading.Event | None = None) -> str:
        """Hash the ``size`` bytes (blocking); CancelledError once ``stop`` is set.

        ValueError for a stream that cannot seek (a pipe): it could not be read again to send it.
        """
        if not self.seekable:
            raise ValueError("a stream that cannot seek is uploaded with its size and sha256 given")
        digest = hashlib.sha256()
        position, remaining = self.start, self.size
        if self.reader is not None:
            self.reader.seek(self.start)
        while remaining:
            if stop is not None and stop.is_set():
                raise CancelledError("hashing stopped")
            chunk = self._read(position, min(HASH_CHUNK, remaining))
            if not chunk:
                break  # shorter than announced: the server will say mismatch, or sending fails
            digest.update(chunk)
            position += len(chunk)
            remaining -= len(chunk)
        if self.reader is not None:
            self.reader.seek(self.start)
        return digest.hexdigest()

    def _read(self, position: int, count: int) -> bytes:
        if self.fd is not None:
            return os.pread(self.fd, count, position)
        assert self.reader is not None
        return self.reader.read(count)

    def body(
        self, consumer: Any, clock: interfaces.IReactorTime | None, on_sent: Callable[[int], None]
    ) -> defer.Deferred[int]:
        """Write the bytes to ``consumer`` (a transport) with backpressure; fires with the count.

        ``on_sent(n)`` is called after each write with the ``n`` bytes just written.
        """
        if self.size == 0:
            return defer.succeed(0)
        if self.fd is not None:
            producer = FileBodyProducer(
                self.fd, self.start, self.size, on_progress=on_sent, clock=clock
            )
            return producer.begin(consumer)
        assert self.reader is not None
        return _ReaderBody(self.reader, self.start, self.size, on_sent).begin(consumer)

    def close(self) -> None:
        """Close the descriptor if :func:`open_source` opened it (from a path)."""
        if self._owned and self.fd is not None:
            os.close(self.fd)
            self.fd = None


def open_source(source: Source, size: int | None = None) -> UploadSource:
    """Open ``source`` for an upload of ``size`` bytes (None: up to its end).

    A path must be a regular file (else ``OSError``); a descriptor is read from offset 0; a file
    object from its current position, by descriptor when it has one, else with ``read`` (it must
    then be seekable, unless ``size`` is given and it is hashed elsewhere).  ``TypeError`` for a
    text file.
    """
    if isinstance(source, int):
        return UploadSource(_size_of(source, 0, source) if size is None else size, 0, fd=source)
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            whole = _size_of(fd, 0, path)
        except BaseException:
            os.close(fd)
            raise
        return UploadSource(whole if size is None else size, 0, fd=fd, owned=True)
    if isinstance(source, io.TextIOBase):
        raise TypeError("upload a binary file object (open it with 'rb'), not a text one")
    start = source.tell() if source.seekable() else 0
    try:
        fd = source.fileno()
        whole = _size_of(fd, start, getattr(source, "name", "the file"))
    except (OSError, ValueError, AttributeError):  # io.BytesIO and the like: no descriptor
        if size is None:  # a stream that cannot seek raises here: its size cannot be known
            end = source.seek(0, os.SEEK_END)
            source.seek(start)
            size = end - start
        return UploadSource(size, start, reader=source)
    return UploadSource(whole if size is None else size, start, fd=fd)


def _size_of(fd: int, start: int, name: object) -> int:
    """The bytes of the regular file ``fd`` from ``start`` on; OSError if it is not one."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        code = errno.EISDIR if stat.S_ISDIR(info.st_mode) else errno.EINVAL
        raise OSError(code, "not a regular file", name)
    return max(info.st_size - start, 0)


def digest_of(
    source: Source | UploadSource, reactor: Any = None
) -> defer.Deferred[tuple[int, str]]:
    """``(size, sha256)`` of ``source``: in ``reactor``'s thread pool when it is bigger than
    :data:`INLINE_HASH_LIMIT` and ``reactor`` provides ``IReactorThreads``, else at once.

    Cancelling the Deferred, or the reactor shutting down, stops the hashing within a megabyte.
    A file object is left at the position it had.
    """
    try:
        opened = source if isinstance(source, UploadSource) else open_source(source)
    except (OSError, TypeError, ValueError) as exc:
        return defer.fail(exc)
    close = opened.close if opened is not source else (lambda: None)
    if opened.size <= INLINE_HASH_LIMIT or not interfaces.IReactorThreads.providedBy(reactor):
        try:
            return defer.succeed((opened.size, opened.sha256()))
        except Exception as exc:  # noqa: BLE001 - handed to the caller's Deferred
            return defer.fail(exc)
        finally:
            close()
    return _in_thread(reactor, opened, close)


def _in_thread(
    reactor: Any, opened: UploadSource, close: Callable[[], None]
) -> defer.Deferred[tuple[int, str]]:
    """Hash ``opened`` in the reactor's thread pool; stoppable by cancel and by shutdown."""
    stop = threading.Event()
    result: defer.Deferred[tuple[int, str]] = defer.Deferred(lambda _d: stop.set())
    trigger = reactor.addSystemEventTrigger("before", "shutdown", stop.set)
    hashing = threads.deferToThreadPool(reactor, reactor.getThreadPool(), opened.sha256, stop)

    def finished(outcome: Any) -> None:
        reactor.removeSystemEventTrigger(trigger)
        close()
        if result.called:  # cancelled meanwhile: the error was delivered already
            return
        if isinstance(outcome, Failure):
            result.errback(outcome)
        else:
            result.callback((opened.size, outcome))

    hashing.addBoth(finished)
    return result


@implementer(interfaces.IPullProducer)
class _ReaderBody:
    """``count`` bytes of a file object without a descriptor, a chunk per pull."""

    def __init__(
        self, reader: IO[bytes], start: int, count: int, on_sent: Callable[[int], None]
    ) -> None:
        self.reader = reader
        self.start = start
        self.remaining = count
        self.sent = 0
        self.on_sent = on_sent
        self.consumer: Any = None
        self.done: defer.Deferred[int] = defer.Deferred()

    def begin(self, consumer: Any) -> defer.Deferred[int]:
        if self.reader.seekable():
            self.reader.seek(self.start)
        self.consumer = consumer
        consumer.registerProducer(self, False)
        return self.done

    def resumeProducing(self) -> None:
        if self.consumer is None:
            return
        if self.remaining == 0:
            self._finish(None)
            return
        try:
            chunk = self.reader.read(min(HASH_CHUNK, self.remaining))
        except OSError as exc:
            self._finish(exc)
            return
        if not chunk:
            self._finish(OSError(errno.EIO, f"the file ended {self.remaining} bytes early"))
            return
        self.remaining -= len(chunk)
        self.sent += len(chunk)
        self.consumer.write(chunk)
        self.on_sent(len(chunk))

    def stopProducing(self) -> None:
        if self.consumer is not None:
            self.consumer = None
            self.done.errback(TransferStopped(f"stopped after {self.sent} bytes"))

    def _finish(self, error: Exception | None) -> None:
        consumer, self.consumer = self.consumer, None
        consumer.unregisterProducer()
        if error is None:
            self.done.callback(self.sent)
        else:
            self.done.errback(error)
