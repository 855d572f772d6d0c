"""The interactive chat client: a terminal (or pipe) joined to a room, reconnecting.

Lines from stdin go to the room; lines from the room go to stdout.  The connection is kept by a
``ClientService`` with capped exponential backoff: when the server goes away the user is told,
lines typed meanwhile are queued (up to 1000) and sent once connected again, and the nick is
claimed again.  At the end of stdin the client sends ``/quit`` (after anything queued) and
exits once the server has said goodbye.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, interfaces
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["GIVE_UP_AFTER_EOF", "MAX_QUEUED", "ChatSession"]

MAX_QUEUED = 1000
GIVE_UP_AFTER_EOF = 10.0  # seconds to keep trying to deliver queued lines once stdin ended


class _Link(Protocol):
    """One connection to the room."""

    transport: Any

    def __init__(self, session: ChatSession) -> None:
        self.session = session
        self.buffer = b""

    def connectionMade(self) -> None:
        self.session.link_up(self)

    def send(self, line: str) -> None:
        self.transport.write(line.encode("utf-8") + b"\n")

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.session.say(line.decode("utf-8", "replace"))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.session.link_down(self)


@implementer(interfaces.IStreamClientEndpoint)
class _Reporting:
    """An endpoint that tells the session about each failed attempt."""

    def __init__(self, endpoint: Any, session: ChatSession) -> None:
        self.endpoint = endpoint
        self.session = session

    def connect(self, factory: Any) -> Any:
        d = self.endpoint.connect(factory)
        d.addErrback(self.session.attempt_failed)
        return d


@implementer(interfaces.IHalfCloseableProtocol)
class _Terminal(Protocol):
    """stdin lines to the session; the session's lines to stdout."""

    transport: Any

    def __init__(self, session: ChatSession) -> None:
        self.session = session
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.session.user_line(line.rstrip(b"\r").decode("utf-8", "replace"))

    def readConnectionLost(self) -> None:
        if self.buffer:
            self.session.user_line(self.buffer.decode("utf-8", "replace"))
            self.buffer = b""
        self.session.user_eof()

    def writeConnectionLost(self) -> None:
        self.session.finish(0)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.session.terminal_closed()


class ChatSession:
    """The client's state: one terminal, a reconnecting link, a queue, a nick."""

    def __init__(
        self,
        reactor: Any,
        endpoint: Any,
        server: str,
        nick: str | None,
        retry_delay: float = 0.5,
        max_delay: float = 15.0,
    ) -> None:
        self.reactor = reactor
        self.server = server
        self.nick = nick
        self.login: tuple[str, str] | None = None  # (user, password) on a server with accounts
        self.terminal = _Terminal(self)
        self.link: _Link | None = None
        self.queued: deque[str] = deque()
        self.eof = False
        self.quitting = False
        self.ever_connected = False
        self.status = 0
        self.done: defer.Deferred[int] = defer.Deferred()
        self._give_up: Any = None
        self._finishing = False
        self.service = ClientService(
            _Reporting(endpoint, self),
            Factory.forProtocol(lambda: _Link(self)),
            retryPolicy=backoffPolicy(initialDelay=retry_delay, maxDelay=max_delay),
            clock=reactor,
        )

    def start(self, stdio: Any) -> defer.Deferred[int]:
        """Attach the terminal and start connecting; fires with the exit status."""
        stdio(self.terminal)
        self.service.startService()
        return self.done

    # --- what the terminal says ----------------------------------------------------------

    def say(self, line: str) -> None:
        """Print a line for the user."""
        if self.terminal.transport is not None:
            self.terminal.transport.write(line.encode("utf-8") + b"\n")

    def user_line(self, line: str) -> None:
        """A line the user typed."""
        if line.startswith("/nick "):
            self.nick = line[6:].strip() or self.nick
        if line.strip().lower() == "/quit":
            self.quitting = True
        if self.link is not None:
            self.link.send(line)
        elif len(self.queued) < MAX_QUEUED:
            self.queued.append(line)
            if self.ever_connected:  # before the first connection, queueing is expected
                self.say("!!! not connected: the line will be sent once connected")
        else:
            self.say("!!! not connected and too many lines queued: line dropped")

    def user_eof(self) -> None:
        """stdin ended: leave once everything queued is sent."""
        self.eof = True
        if self.link is not None:
            self.quitting = True
            self.link.send("/quit")
        else:
            self._give_up = self.reactor.callLater(GIVE_UP_AFTER_EOF, self._no_server)

    # --- what the connection says -----------------------------------------------------------

    def link_up(self, link: _Link) -> None:
        """Connected (again): claim the nick, send what waited."""
        self.link = link
        self.say(f"*** connected to {self.server}")
        self.ever_connected = True
        if self._give_up is not None and self._give_up.active():
            self._give_up.cancel()
        if self.login is not None:
            link.send(f"/login {self.login[0]} {self.login[1]}")
        elif self.nick:
            link.send(f"/nick {self.nick}")
        while self.queued:
            link.send(self.queued.popleft())
        if self.eof and not self.quitting:
            self.quitting = True
            link.send("/quit")

    def link_down(self, link: _Link) -> None:
        """The connection ended: done if we quit, else the service will reconnect."""
        if self.link is link:
            self.link = None
        if self.quitting:
            self.finish(0)
        elif not self._finishing:
            self.say("*** connection lost; reconnecting...")

    def attempt_failed(self, failure: Failure) -> Failure:
        """A connection attempt failed; the service will try again after a delay."""
        self.say(f"*** cannot reach {self.server} ({failure.getErrorMessage()}); retrying...")
        return failure

    def _no_server(self) -> None:
        self.say(f"!!! gave up: no connection to {self.server} within {GIVE_UP_AFTER_EOF:g} s")
        self.finish(3)

    # --- the end ------------------------------------------------------------------------------

    def finish(self, status: int) -> None:
        """Stop reconnecting, flush the terminal, then fire ``done``."""
        if self._finishing:
            return
        self._finishing = True
        self.status = status
        self.quitting = True
        # Not from inside a ClientService callback (it is not reentrant): next turn.
        self.reactor.callLater(0, self._stop)

    def _stop(self) -> None:
        d = self.service.stopService()
        d.addBoth(lambda _: self.terminal.transport.loseConnection())

    def terminal_closed(self) -> None:
        """stdout is flushed and closed: done."""
        if not self.done.called:
            self.done.callback(self.status)
