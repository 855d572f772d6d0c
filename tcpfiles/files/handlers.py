"""What the files server does for each request: :data:`ROUTES`, one handler per kind of request.

A handler gets the connection and the parsed request.  The short ones answer at once (HELP,
QUIT, MKDIR, a bad request); STAT and LOGIN move the connection to a state that waits for the
hash or the checker (both here); GET, PUT and LIST start the states of their own modules.  A
handler may raise :class:`~tcpfiles.tree.paths.PathError` or ``OSError``: the connection
answers it with :func:`refuse`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from tcpfiles.core.auth import UNAUTHORIZED, password_credentials
from tcpfiles.core.connections import peer_key
from tcpfiles.files import wire
from tcpfiles.files.download import get
from tcpfiles.files.listing import list_directory
from tcpfiles.files.refusals import answer_failure, refusal_of, request_path
from tcpfiles.files.states import RESPONDING, State, while_current
from tcpfiles.files.upload import put
from tcpfiles.tree.interfaces import IFilesAccount
from tcpfiles.tree.paths import PathError
from tcpfiles.tree.store import FileInfo
from tcpfiles.tree.uploads import make_directory

if TYPE_CHECKING:
    from twisted.internet import defer

    from tcpfiles.files.protocol import FileServerProtocol

log = Logger(namespace="tcpfiles.files")


@dataclass(frozen=True)
class Route:
    """A kind of request: its handler, and who may send it."""

    handle: Callable[[FileServerProtocol, Any], None]
    #: Answered before a LOGIN on a server with accounts (the others are ``unauthorized``).
    before_login: bool = False
    #: Changes the tree: ``read-only`` for an account without uploads.
    writes: bool = False


def bad_request(conn: FileServerProtocol, request: wire.BadRequest) -> None:
    """``ERR bad-request`` and why."""
    conn.error("bad-request", request.message)


def help_text(conn: FileServerProtocol, _request: wire.Help) -> None:
    """The list of requests."""
    conn.respond(wire.HELP_ANSWER)


def quit_connection(conn: FileServerProtocol, _request: wire.Quit) -> None:
    """``OK bye``, then close."""
    conn.respond(wire.BYE)
    conn.close()


def mkdir(conn: FileServerProtocol, request: wire.Mkdir) -> None:
    """Create one directory, at once (a few system calls, no thread)."""
    created = make_directory(conn.account.uploads.root, request.path)
    conn.respond(wire.made_line(created))


def stat(conn: FileServerProtocol, request: wire.Stat) -> None:
    """Type, size, mtime and, for a file, its sha256: hashed off the reactor, so the connection
    waits for it in :class:`Hashing` (often not for long: hashes are cached)."""
    d = conn.account.store.stat(request.path, peer_key(conn.transport.getPeer()))
    hashing = Hashing(conn, request, d)
    conn.enter(hashing)
    d.addCallbacks(hashing.done, hashing.failed)


class Hashing(State):
    """A STAT waiting for its file's sha256.  Hashes are bounded per client address; a closed
    connection stops waiting (its Deferred is cancelled), which abandons a hash nobody else
    awaits."""

    __slots__ = ("request", "hashed")

    name = RESPONDING

    def __init__(
        self, conn: FileServerProtocol, request: wire.Stat, hashed: defer.Deferred[FileInfo]
    ) -> None:
        super().__init__(conn)
        self.request = request
        self.hashed = hashed

    @while_current
    def done(self, info: FileInfo) -> None:
        """The answer."""
        self.conn.respond(wire.stat_line(info.kind, info.size, info.mtime, info.sha256))

    @while_current
    def failed(self, failure: Failure) -> None:
        """A refusal (busy, not found...) or, for anything else, ``ERR internal``."""
        answer_failure(
            self.conn,
            failure,
            "hashing",
            "the server could not read the file",
            request_path(self.request),
        )

    def lost(self) -> None:
        """Nobody will read the answer: stop waiting for it (one log event per request)."""
        self.hashed.cancel()
        self.conn.log_outcome("aborted: connection lost", 0)


def login(conn: FileServerProtocol, request: wire.Login) -> None:
    """Check a user's password with the portal; refused at once while the address or the
    account must wait after failed logins (one answer for both: docs/protocol.md)."""
    portal = conn.factory.portal
    if portal is None:
        conn.error("bad-request", "this server has no accounts: no need to log in")
        return
    host = peer_key(conn.transport.getPeer())
    wait = conn.factory.limiter.wait(host, request.user)
    if wait:
        conn.error("busy", f"too many failed logins from your address; wait {wait:.0f} s")
        return
    checking = LoggingIn(conn, request.user, host)
    conn.enter(checking)
    d = portal.login(password_credentials(request.user, request.password), None, IFilesAccount)
    d.addCallbacks(checking.logged_in, checking.failed)


class LoggingIn(State):
    """A LOGIN waiting for the checker."""

    __slots__ = ("user", "host")

    name = RESPONDING

    def __init__(self, conn: FileServerProtocol, user: str, host: str) -> None:
        super().__init__(conn)
        self.user = user
        self.host = host

    @while_current
    def logged_in(self, result: tuple[Any, Any, Any]) -> None:
        """The connection now acts as the account."""
        _interface, account, _logout = result
        self.conn.account = account
        log.info("{peer} logged in as {user}", peer=self.conn.peer, user=account.name)
        self.conn.respond(wire.welcome_line(account.name))

    def failed(self, failure: Failure) -> None:
        """Counted against the address and the account even if the client has gone."""
        conn = self.conn
        if not failure.check(*UNAUTHORIZED):
            log.failure("{peer} login: checker failed", failure, peer=conn.peer)
        conn.factory.limiter.failed(self.host, self.user)
        log.warn(
            "{peer} failed to log in as {user}",
            peer=conn.peer,
            user=wire.escape_text(self.user[:64]),
        )
        if self.current:
            conn.error("unauthorized", "bad user name or password")


def refuse(conn: FileServerProtocol, exc: PathError | OSError, request: wire.Request) -> None:
    """Answer a request its handler could not serve: its refusal (``busy`` when out of
    descriptors: retryable, no traceback), else ``ERR internal`` and a logged traceback."""
    refusal = refusal_of(exc)
    if refusal is not None:
        conn.error(refusal.code, f"{refusal}: {request_path(request)}")
        return
    log.failure("{peer} {request}: file system error", peer=conn.peer, request=conn.request_text)
    assert isinstance(exc, OSError)  # a PathError is always a refusal
    conn.error("internal", f"server file system error ({exc.strerror})")


#: Each kind of request and its handler.
ROUTES: dict[type, Route] = {
    wire.Get: Route(get),
    wire.List: Route(list_directory),
    wire.Stat: Route(stat),
    wire.Put: Route(put, writes=True),
    wire.Mkdir: Route(mkdir, writes=True),
    wire.Login: Route(login, before_login=True),
    wire.Help: Route(help_text, before_login=True),
    wire.Quit: Route(quit_connection, before_login=True),
    wire.BadRequest: Route(bad_request, before_login=True),
}
