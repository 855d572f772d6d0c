"""``oneshot``: the socket tutorial's downloader protocol, server and client.

The client connects and sends a bare file name (a newline is allowed, not needed); the server
answers with the raw bytes of the file and closes; a file it cannot serve is answered with the
single byte ``1``.  The name is complete at a newline, when the client half-closes, or after
``quiet`` seconds without a byte; it must be complete within ``name_timeout`` seconds of the
connection (a fixed deadline: a trickle of bytes does not extend it), else the answer is ``1``.
The same confinement rules as the files service apply (it uses the same store).  A file whose
whole content is ``1`` cannot be told from a refusal: that is the tutorial protocol's own limit.

oneshot cannot log users in: under ``--auth`` it serves only what an anonymous user may see
(:func:`tcpfiles.core.plugin.context_for`), and with no root at all it answers ``1`` to every name.

Limits, draining and the idle timeout are the kernel's (:mod:`tcpfiles.core.guard`): a
connection with no traffic for ``--oneshot-idle-timeout`` seconds is answered ``1`` if its name is
still awaited (:meth:`OneShotProtocol.timed_out`), then closed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import interfaces
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpfiles.core.connections import describe_peer
from tcpfiles.core.text import escape_name, escape_text
from tcpfiles.tree.paths import MAX_PATH_BYTES, PathError
from tcpfiles.tree.producer import CHUNK_SIZE, FileBodyProducer
from tcpfiles.tree.store import FileStore, OpenedFile

__all__ = ["DEFAULT_PORT", "MISSING", "OneShotFactory", "OneShotProtocol"]

log = Logger(namespace="tcpfiles.oneshot.protocol")

MISSING = b"1"
DEFAULT_PORT = 8887


@implementer(interfaces.IHalfCloseableProtocol)
class OneShotProtocol(Protocol):
    """Read one name, send that file (or ``1``), close."""

    transport: Any
    factory: OneShotFactory

    def __init__(self) -> None:
        self.buffer = b""
        self.answered = False
        self.peer = "?"
        #: the name deadline, then the transfer's stall timer
        self._timer: interfaces.IDelayedCall | None = None
        #: the quiet period that ends a name sent without a newline (reset by every byte)
        self._quiet: interfaces.IDelayedCall | None = None
        self._started = 0.0

    def connectionMade(self) -> None:
        """Wait for the name, until a fixed deadline from the connection."""
        self.peer = describe_peer(self.transport.getPeer())
        self._started = self.factory.clock.seconds()
        self._timer = self.factory.clock.callLater(self.factory.name_timeout, self._name_late)

    def dataReceived(self, data: bytes) -> None:
        """Collect the name; answer at a newline, or after a quiet period."""
        if self.answered:
            return
        self.buffer += data
        if b"\n" in self.buffer:
            self.buffer = self.buffer.split(b"\n", 1)[0]
            self._answer()
        elif len(self.buffer) > MAX_PATH_BYTES:
            self._answer()
        elif self._quiet is not None and self._quiet.active():
            self._quiet.reset(self.factory.quiet)
        else:
            self._quiet = self.factory.clock.callLater(self.factory.quiet, self._answer)

    def readConnectionLost(self) -> None:
        """The client sent its name and half-closed: answer now."""
        if not self.answered:
            self._answer()

    def writeConnectionLost(self) -> None:
        """The client cannot read any more."""
        self.transport.abortConnection()

    def drain(self) -> None:
        """Shutting down: a transfer in flight finishes; a connection still naming is closed."""
        if not self.answered:
            self.answered = True
            self._cancel()
            self.transport.loseConnection()

    def timed_out(self) -> None:
        """The kernel's idle timeout: a name still awaited is refused like a late one; a
        transfer (no longer in progress: it would not be idle) ends with the connection."""
        if not self.answered:
            self._refuse(f"idle for {self.factory.idle_timeout:g} s")
        else:
            self.transport.loseConnection()

    def _name_late(self) -> None:
        """The deadline passed before the name was complete: refuse, whatever came so far."""
        self._timer = None
        self._refuse(f"name not complete within {self.factory.name_timeout:g} s")

    def _answer(self) -> None:
        self._cancel()
        raw = self.buffer.rstrip(b"\r")
        try:
            if len(raw) > MAX_PATH_BYTES:
                raise PathError("name too long")
            if self.factory.store is None:
                raise PathError("no files to serve (--auth without --anonymous)")
            opened = self.factory.store.open_file(raw.decode("utf-8"))
        except (UnicodeDecodeError, PathError, OSError) as exc:
            self._refuse(str(exc))
            return
        self.answered = True
        producer = FileBodyProducer(
            opened.fd, 0, opened.size, CHUNK_SIZE, self._progress, clock=self.factory.clock
        )
        self._timer = self.factory.clock.callLater(self.factory.stall_timeout, self._stalled)
        producer.begin(self.transport).addBoth(self._sent, opened, producer)

    def _refuse(self, why: str) -> None:
        """Answer ``1``, close, log why."""
        self._cancel()
        self.answered = True
        self.transport.write(MISSING)
        self.transport.loseConnection()
        self._log(f"refused: {escape_text(why)}", 0)

    def _progress(self, _nbytes: int) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.factory.stall_timeout)

    def _stalled(self) -> None:
        self._timer = None
        self.transport.abortConnection()

    def _sent(self, result: Any, opened: OpenedFile, producer: FileBodyProducer) -> None:
        opened.close()
        self._cancel()
        if isinstance(result, Failure):
            self._log(f"aborted: {result.getErrorMessage()}", producer.sent)
            self.transport.abortConnection()
        else:
            self._log("OK", producer.sent)
            self.transport.loseConnection()

    def _log(self, outcome: str, nbytes: int) -> None:
        """The one event per connection; the name escaped as the files log escapes requests."""
        log.info(
            "{peer} oneshot {name} -> {outcome} {nbytes} bytes in {seconds:.3f}s",
            peer=self.peer,
            name=escape_name(self.buffer.rstrip(b"\r")[:200]),
            outcome=outcome,
            nbytes=nbytes,
            seconds=self.factory.clock.seconds() - self._started,
        )

    def _cancel(self) -> None:
        for timer in (self._timer, self._quiet):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._quiet = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Forget the connection."""
        self._cancel()


class OneShotFactory(Factory[OneShotProtocol]):
    """Serves one file per connection from a store (None: refuses every name)."""

    protocol = OneShotProtocol

    def __init__(
        self, store: FileStore | None, clock: interfaces.IReactorTime, options: usage.Options
    ) -> None:
        self.clock = clock
        self.store = store
        self.quiet = options["quiet"]
        self.name_timeout = options["name-timeout"]
        self.stall_timeout = options["stall-timeout"]
        #: the kernel's (``--oneshot-idle-timeout``), for the log line of a connection it ends
        self.idle_timeout = options["idle-timeout"]


# --- client -------------------------------------------------------------------------------------
