"""The chat room on the wire: UTF-8 lines in, lines out; a thin adaptor over :class:`Room`.

Each connection is a room member.  Lines are split on bytes and bounded (``max_line``); a longer
one is refused and skipped up to its newline.  Every line, refused or handled here (``/login``),
spends the member's flood budget in the room like any other.  Invalid UTF-8 is replaced, never
fatal.  Output is capped: the protocol is registered as a push producer on its own transport, so
it learns when Twisted's buffer is full; a member who lets more than ``max_queue`` bytes pile up
beyond that is disconnected, and nobody else waits for them.

A user who sends nothing for ``idle_timeout`` is told so and closed, however much the room says
meanwhile: stricter than the kernel's idle timeout (:mod:`tcpfiles.core.guard`), which counts
traffic either way and ends the same way (:meth:`ChatProtocol.timed_out`).  Limits and draining
are the kernel's too.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import interfaces
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpfiles.chat.room import Room
from tcpfiles.core.auth import UNAUTHORIZED, LoginLimiter, password_credentials
from tcpfiles.core.connections import peer_key
from tcpfiles.core.interfaces import IAccount

__all__ = ["GREETING", "GREETING_WITH_ACCOUNTS", "ChatFactory", "ChatProtocol"]

GREETING = "*** tcpfiles chat: /nick NAME to join, /help for commands"
GREETING_WITH_ACCOUNTS = "*** tcpfiles chat: /login NAME PASSWORD to join, /help for commands"
_OPEN = ("/help", "/quit")  # what a user may do before logging in


@implementer(interfaces.IPushProducer)
class ChatProtocol(Protocol):
    """One chat user."""

    transport: Any
    factory: ChatFactory

    def __init__(self) -> None:
        self.nick: str | None = None
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already known to hold no newline
        self._skipping = False
        self._paused = False
        self._queued = 0
        self._closing = False
        self._leave_reason = "connection lost"
        self._idle: interfaces.IDelayedCall | None = None
        self._reading_held: interfaces.IDelayedCall | None = None  # over budget: not reading

    # --- Member -----------------------------------------------------------------------------

    def send(self, line: str) -> None:
        """Deliver a line, or drop this user if their output queue is over the cap."""
        if self._closing:
            return
        data = line.encode("utf-8") + b"\n"
        if self._paused:
            self._queued += len(data)
            if self._queued > self.factory.max_queue:
                self._leave_reason = "too slow: output queue full"
                self._closing = True
                self.factory.room.leave(self, self._leave_reason)
                self.transport.abortConnection()
                return
        self.transport.write(data)

    # --- IPushProducer: Twisted tells us when our output is not being read -----------------

    def pauseProducing(self) -> None:
        """The transport's buffer is full: start counting what piles up."""
        self._paused = True
        self._queued = 0

    def resumeProducing(self) -> None:
        """The buffer drained."""
        self._paused = False
        self._queued = 0

    def stopProducing(self) -> None:
        """The connection is going away."""

    # --- connection -------------------------------------------------------------------------

    def connectionMade(self) -> None:
        """Greet; the user joins the room with /nick."""
        self.address = peer_key(self.transport.getPeer())  # joins are limited per address
        self.transport.registerProducer(self, True)
        self._idle = self.factory.clock.callLater(self.factory.idle_timeout, self._idle_out)
        self.send(GREETING if self.factory.portal is None else GREETING_WITH_ACCOUNTS)

    def dataReceived(self, data: bytes) -> None:
        """Split into lines and hand each to the room (one pass over the bytes, however cut)."""
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.factory.idle_timeout)
        self._buffer += data
        start = 0
        while not self._closing:
            end = self._buffer.find(b"\n", max(start, self._scanned))
            if end < 0:
                break
            line = bytes(self._buffer[start:end])
            start = self._scanned = end + 1
            self._line(line)
            if not self._closing and self.factory.room.refill_in(self) > 0:
                start = self._out_of_budget(start)
        del self._buffer[:start]
        self._scanned = len(self._buffer)
        if len(self._buffer) > self.factory.max_line and not self._closing:
            if not self._skipping:
                self._too_long()
            self._skipping = True
            self._buffer.clear()
            self._scanned = 0

    def _out_of_budget(self, start: int) -> int:
        """The member's flood budget is spent: drop what else it sent in this read at once (each
        line would be dropped anyway, one by one: a stream of empty lines kept the process at
        98% CPU), save a ``/quit``, and stop reading until a line is allowed again.  Returns the
        new start of the buffer."""
        rest = bytes(self._buffer[start:])
        if not rest:
            self._hold_reading()
            return start
        if b"/quit" in rest and any(
            line.rstrip(b"\r").lower() == b"/quit" for line in rest.split(b"\n")
        ):
            self.factory.room.line(self, "/quit")
            self._leave_reason = "quit"
            self._close()
            return len(self._buffer)
        self.factory.room.allowed(self)  # over budget: the one slow-down notice, if not yet sent
        self._skipping = not rest.endswith(b"\n")  # a partial last line: drop its tail too
        self._scanned = len(self._buffer)
        self._hold_reading()
        return len(self._buffer)

    def _hold_reading(self) -> None:
        """Read nothing more until the budget allows a line (TCP keeps the rest meanwhile)."""
        if self._reading_held is None and not self._closing:
            self.transport.pauseProducing()
            wait = self.factory.room.refill_in(self)
            self._reading_held = self.factory.clock.callLater(wait, self._read_again)

    def _read_again(self) -> None:
        self._reading_held = None
        if not self._closing:
            self.transport.resumeProducing()

    def _line(self, line: bytes) -> None:
        if self._skipping:  # the tail of a line that was too long
            self._skipping = False
            return
        if len(line) > self.factory.max_line:
            self._too_long()
            return
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        if self.factory.portal is not None and self._account_line(text):
            return
        if not self.factory.room.line(self, text):
            self._leave_reason = "quit"
            self._close()

    def _too_long(self) -> None:
        """A line over the limit: it spends flood budget like any line, and is refused."""
        if self.factory.room.allowed(self):
            self.send(f"!!! line too long (max {self.factory.max_line} bytes)")

    def _account_line(self, text: str) -> bool:
        """With accounts: handle /login, refuse /nick and anything before a login.

        A line handled here spends flood budget (``/login`` attempts included); the room
        spends it for the others.
        """
        command = text.split(" ", 1)[0].lower()
        if command not in ("/login", "/nick") and (self.nick is not None or command in _OPEN):
            return False
        if not self.factory.room.allowed(self):
            return True
        if command == "/login":
            _, _, rest = text.partition(" ")
            name, _, password = rest.strip().partition(" ")
            if not name or not password:
                self.send("!!! usage: /login NAME PASSWORD")
            elif self.nick is not None:
                self.send(f"!!! you are logged in as {self.nick}")
            else:
                self._login(name, password)
        elif command == "/nick":
            self.send("!!! nicks are account names here: /login NAME PASSWORD")
        else:
            self.send("!!! log in first: /login NAME PASSWORD")
        return True

    def _login(self, name: str, password: str) -> None:
        host = peer_key(self.transport.getPeer())
        wait = self.factory.limiter.wait(host, name)
        if wait:
            self.send(f"!!! too many failed logins from your address; wait {wait:.0f} s")
            return
        d = self.factory.portal.login(password_credentials(name, password), None, IAccount)

        def joined(result: Any) -> None:
            if not self._closing:
                self.factory.room.set_nick(self, result[1].name)

        def refused(failure: Failure) -> None:
            failure.trap(*UNAUTHORIZED)
            self.factory.limiter.failed(host, name)
            self.send("!!! bad user name or password")

        d.addCallbacks(joined, refused)

    def drain(self) -> None:
        """Shutting down: say so, then close."""
        self.send("*** the server is shutting down")
        self._leave_reason = "server shutting down"
        self._close()

    def timed_out(self) -> None:
        """The kernel's idle timeout (no traffic either way): as our own, stricter one."""
        self._idle_out()

    def _idle_out(self) -> None:
        """The user has said nothing for the idle timeout: say so, then close."""
        self._idle = None
        self.send(f"*** idle for {self.factory.idle_timeout:g} s; closing")
        self._leave_reason = "idle"
        self._close()

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.factory.room.leave(self, self._leave_reason)
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Leave the room and forget the connection."""
        self._closing = True
        for timer in (self._idle, self._reading_held):
            if timer is not None and timer.active():
                timer.cancel()
        self.factory.room.leave(self, self._leave_reason)


class ChatFactory(Factory[ChatProtocol]):
    """One room and its users."""

    protocol = ChatProtocol

    def __init__(
        self,
        clock: interfaces.IReactorTime,
        options: usage.Options,
        portal: Any = None,
        limiter: LoginLimiter | None = None,
    ) -> None:
        self.clock = clock
        self.portal = portal  # with accounts: nicks are account names, /login to join
        # not ``limiter or``: a LoginLimiter has a length, and the server's is empty at first
        self.limiter = limiter if limiter is not None else LoginLimiter(clock.seconds)
        self.room = Room(options["history"], clock.seconds, options["rate"], options["burst"])
        self.max_line = options["max-line"]
        self.max_queue = options["max-queue"]
        self.idle_timeout = options["idle-timeout"]
        self.relay: Any = None  # a tcpfiles.chat.bus.RoomBus: the room spans processes

    def startFactory(self) -> None:
        """Join the bus, if any, once the reactor runs (not at bind time, before a fork)."""
        if self.relay is not None:
            self.clock.callLater(0, self.relay.start)

    def stopFactory(self) -> None:
        """Leave the bus once the users here have left (their leaves are relayed)."""
        if self.relay is not None:
            self.relay.stop_when_empty()

    def refusal_message(self, reason: str) -> bytes:
        """``!!! busy: <reason>``."""
        return f"!!! busy: {reason}\n".encode()
