"""Where a files connection is, as objects: each state holds its own data (its timer, the file,
the upload, the listing) and answers the connection's events while it is the current one.

:class:`~tcpfiles.files.protocol.FileServerProtocol` has exactly one state, ``protocol.state``,
and moves with ``protocol.enter(new)``, which lets the old one go (its timer stops).  The
states of this module are the request loop's own: waiting for a request (:class:`Idle`, or
:class:`ReadingLine` once part of one has arrived), waiting for the next reactor turn
(:class:`NextTurn`), an answer waiting to leave (:class:`Answering`) and :class:`Closing`.
The others sit beside the request that starts them: a GET's body
(:mod:`~tcpfiles.files.download`), a PUT's (:mod:`~tcpfiles.files.upload`), a LIST
(:mod:`~tcpfiles.files.listing`), a STAT waiting for its hash and a LOGIN for its checker
(:mod:`~tcpfiles.files.handlers`).  Twisted's ``application/_client_service.py`` is the model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from twisted.internet import interfaces
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcpfiles.files import wire

if TYPE_CHECKING:
    from tcpfiles.files.protocol import FileServerProtocol

log = Logger(namespace="tcpfiles.files")

#: The phase a state belongs to (its ``name``): what the connection does for its client.
WAITING = "WAITING"  # for a request
RESPONDING = "RESPONDING"  # sending an answer (or preparing it)
RECEIVING = "RECEIVING"  # an upload's body
CLOSING = "CLOSING"


class State:
    """The base of every state: no timer, input buffered for later, nothing to release."""

    __slots__ = ("conn", "timer")

    name: ClassVar[str]
    #: Whether the request loop may take the next request in this state.
    takes_requests: ClassVar[bool] = False

    def __init__(self, conn: FileServerProtocol) -> None:
        self.conn = conn
        self.timer: interfaces.IDelayedCall | None = None

    @property
    def current(self) -> bool:
        """Whether this is still the connection's state (not left, not closed)."""
        return self.conn.state is self

    def data_received(self, data: bytes) -> None:
        """Bytes from the client: requests, kept for their turn (the buffer is bounded)."""
        self.conn.lines.feed(data)
        self.conn.pump()

    def input_ended(self) -> None:
        """The client half-closed: what it sent is answered in turn, then the connection ends."""

    def lost(self) -> None:
        """The connection is gone: release what this state holds."""
        self.leave()

    def arm(self, seconds: float) -> None:
        """Start this state's timer, or push it back; :meth:`expired` runs if it runs out."""
        if self.timer is None:
            self.timer = self.conn.clock.callLater(seconds, self._ran_out)
        else:
            self.timer.reset(seconds)

    def leave(self) -> None:
        """The connection moves on: this state's timer stops."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _ran_out(self) -> None:
        self.timer = None
        self.expired()

    def expired(self) -> None:
        """This state's timer ran out."""


def while_current(method: Callable[..., None]) -> Callable[..., None]:
    """A state's callback (a Deferred's) that only matters while the state is the connection's:
    once the connection has moved on or closed, what it would answer has nobody to go to."""

    @functools.wraps(method)
    def callback(self: State, *args: Any) -> None:
        if self.conn.state is self:
            method(self, *args)

    return callback


class Stalling(State):
    """A state moving a body or an answer: dropped when it makes no progress for too long."""

    __slots__ = ()

    def start_timer(self) -> None:
        """Start timing the progress."""
        self.arm(self.conn.limits.stall_timeout)

    def progress(self, _nbytes: int = 0) -> None:
        """Bytes moved: push the deadline back."""
        if self.timer is not None:
            self.timer.reset(self.conn.limits.stall_timeout)

    def expired(self) -> None:
        conn = self.conn
        log.info(
            "{peer} {request}: no progress for {seconds:g} s, dropping the connection",
            peer=conn.peer,
            request=conn.request_text,
            seconds=conn.limits.stall_timeout,
        )
        conn.abort()


class Idle(State):
    """Waiting for a request, with nothing of one received: closed after ``idle_timeout``."""

    __slots__ = ()

    name = WAITING
    takes_requests = True

    def input_ended(self) -> None:
        self.conn.pump()  # nothing more can come: close

    def expired(self) -> None:
        conn = self.conn
        conn.transport.write(
            wire.err_line("timeout", f"idle for {conn.limits.idle_timeout:g} s; closing")
        )
        conn.close()


class ReadingLine(Idle):
    """Part of a request line has arrived: the rest must follow within ``line_timeout`` of its
    first byte (more bytes do not push that back)."""

    __slots__ = ()

    def expired(self) -> None:
        conn = self.conn
        conn.request_text = "(incomplete request line)"
        conn.started = conn.clock.seconds() - conn.limits.line_timeout
        conn.fail_and_close(
            "timeout", f"request line not complete within {conn.limits.line_timeout:g} s"
        )


class NextTurn(State):
    """A pipelined burst took its turn's share of requests: the rest waits for the next reactor
    turn, reading paused, so that other connections are answered meanwhile."""

    __slots__ = ()

    name = WAITING

    def data_received(self, data: bytes) -> None:
        self.conn.lines.feed(data)  # its turn comes

    def expired(self) -> None:
        self.conn.enter(self.conn.idle)
        self.conn.pump()


class Answering(Stalling):
    """An answer written and not yet taken by the transport (a client that is not reading):
    the next request waits until it is."""

    __slots__ = ("outcome", "nbytes")

    name = RESPONDING

    def __init__(self, conn: FileServerProtocol, outcome: str, nbytes: int) -> None:
        super().__init__(conn)
        self.outcome = outcome
        self.nbytes = nbytes

    def sent(self, _ignored: object) -> None:
        """The transport has taken it all."""
        self.conn.finished(self.outcome, self.nbytes)

    def cut_off(self, _failure: Failure) -> None:
        """The connection was lost first."""
        self.conn.log_outcome("aborted: connection lost", self.nbytes)


class Closing(State):
    """Closing, or closed: input is ignored, nothing is answered any more.

    ``dropped`` is the state the connection was dropped from mid-way (a stalled body, an upload
    cut short): what it holds (the upload, the open directory) goes, and is logged, when the
    connection does.
    """

    __slots__ = ("dropped",)

    name = CLOSING

    def __init__(self, conn: FileServerProtocol, dropped: State | None = None) -> None:
        super().__init__(conn)
        self.dropped = dropped

    def data_received(self, data: bytes) -> None:
        pass

    def lost(self) -> None:
        if self.dropped is not None:
            self.dropped.lost()


class Closed(State):
    """After the connection is lost: input is ignored, nothing is answered, nothing held, and
    no way back to the connection, so that it is freed at once rather than by the cyclic
    garbage collector (one request per connection: 345k to 340k instructions under twistd, and
    19 young-generation collections per 1000 connections).  One for every connection:
    :data:`CLOSED`."""

    __slots__ = ()

    name = CLOSING

    def __init__(self) -> None:  # no connection
        self.timer = None

    def data_received(self, data: bytes) -> None:
        pass

    def arm(self, seconds: float) -> None:
        pass


#: The state of every connection once lost.
CLOSED = Closed()
