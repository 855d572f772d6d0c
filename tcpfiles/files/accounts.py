"""Accounts: who may log in (twisted.cred), and what each account may reach.

Checkers come from ``--auth`` in twisted.cred's standard ``strcred`` form (``memory:alice:pw``,
``file:/etc/tcpfiles.passwd``, ``unix``...).  The realm turns an authenticated name into an
:class:`Account`: its own root and whether it may write, from the users file (see
:func:`parse_users`), else the server's ``--root`` and ``--writable``.  Anonymous access (only
with ``--anonymous``) is read-only on ``--root``.  :class:`LoginLimiter` slows down password
guessing per peer address.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.cred import checkers, credentials, error, portal
from twisted.internet import defer
from zope.interface import implementer

from tcpfiles.files.hashing import Hasher
from tcpfiles.files.paths import Root
from tcpfiles.files.store import FileStore
from tcpfiles.files.uploads import Uploads
from tcpfiles.interfaces import IAccount, IFilesAccount

ANONYMOUS = "anonymous"
UNAUTHORIZED = (error.UnauthorizedLogin, error.UnhandledCredentials)


@implementer(IFilesAccount)
@dataclass(frozen=True)
class Account:
    """One logged-in user (or the anonymous one)."""

    name: str
    store: FileStore
    uploads: Uploads | None


@dataclass(frozen=True)
class Grant:
    """A line of the users file: a root and the right to write below it."""

    root: Root
    writable: bool


def parse_users(path: str, base: Root) -> dict[str, Grant]:
    """Read a users file: ``NAME ROOT RIGHTS`` per line, ``#`` comments.

    ROOT is a directory, relative to ``--root`` (``base``) unless absolute; RIGHTS is ``ro`` or
    ``rw``.  ValueError (with the line number) for anything else.
    """
    grants: dict[str, Grant] = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) != 3 or words[2] not in ("ro", "rw"):
                raise ValueError(f"{path}:{number}: expected NAME ROOT ro|rw, got {line.strip()!r}")
            name, root, rights = words
            if name in grants:
                raise ValueError(f"{path}:{number}: {name} is listed twice")
            directory = root if os.path.isabs(root) else os.path.join(base.path, root)
            try:
                grants[name] = Grant(Root.at(directory), rights == "rw")
            except NotADirectoryError:
                raise ValueError(f"{path}:{number}: {directory} is not a directory") from None
    return grants


@implementer(portal.IRealm)
class FilesRealm:
    """Accounts for files (and any behaviour that only needs the account's name)."""

    def __init__(
        self,
        root: Root,
        writable: bool,
        grants: dict[str, Grant],
        max_upload: int,
        defer_to_thread: Callable[..., Any],
        hasher: Hasher | None = None,
    ) -> None:
        self.default = Grant(root, writable)
        self.grants = grants
        self.max_upload = max_upload
        self._defer_to_thread = defer_to_thread
        self.hasher = hasher or Hasher(defer_to_thread)  # shared by every root's store
        self._stores: dict[str, tuple[FileStore, Uploads]] = {}

    def store_for(self, root: Root) -> tuple[FileStore, Uploads]:
        """One store and one upload registry per root, shared by everyone who uses it."""
        if root.real not in self._stores:
            self._stores[root.real] = (
                FileStore(root, hasher=self.hasher),
                Uploads(root, self.max_upload, self._defer_to_thread),
            )
        return self._stores[root.real]

    def account(self, name: str) -> Account:
        """The account for an authenticated name."""
        if name == ANONYMOUS:
            store, _ = self.store_for(self.default.root)
            return Account(ANONYMOUS, store, None)
        grant = self.grants.get(name, self.default)
        store, uploads = self.store_for(grant.root)
        return Account(name, store, uploads if grant.writable else None)

    def requestAvatar(self, avatarId: Any, mind: object, *interfaces: Any) -> Any:
        """twisted.cred: the avatar for an authenticated id."""
        name = ANONYMOUS if avatarId is checkers.ANONYMOUS else _text(avatarId)
        for interface in interfaces:
            if interface in (IFilesAccount, IAccount):
                return interface, self.account(name), lambda: None
        raise NotImplementedError("tcpfiles accounts only provide IAccount and IFilesAccount")


@implementer(checkers.ICredentialsChecker)
class EitherEncoding:
    """A password checker that works whether the wrapped one keeps names as bytes or as str.

    twisted.cred's own checkers differ (``memory:`` compares str, ``file:`` bytes); a LOGIN is
    tried as UTF-8 bytes first, then as str.
    """

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, checker: checkers.ICredentialsChecker) -> None:
        self.checker = checker

    def requestAvatarId(self, creds: Any) -> Any:
        """The avatar id (a str) for ``creds``, or UnauthorizedLogin."""
        as_bytes = credentials.UsernamePassword(_bytes(creds.username), _bytes(creds.password))
        # Typed as bytes in Twisted, but the memory: checker only ever matches str.
        as_text = credentials.UsernamePassword(
            _text(creds.username),  # type: ignore[arg-type]
            _text(creds.password),  # type: ignore[arg-type]
        )

        def as_str(failure: Any) -> Any:
            failure.trap(*UNAUTHORIZED)
            return self.checker.requestAvatarId(as_text)

        d: defer.Deferred[Any] = defer.maybeDeferred(self.checker.requestAvatarId, as_bytes)
        return d.addErrback(as_str).addCallback(_text)


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


@implementer(checkers.ICredentialsChecker)
class AnyOf:
    """Password checkers tried in turn; the first that knows the user decides.

    A twisted.cred Portal keeps one checker per credentials interface, so with several
    ``--auth`` options the last one would silently win; this keeps all of them.
    """

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, members: list[checkers.ICredentialsChecker]) -> None:
        self.members = members

    @defer.inlineCallbacks
    def requestAvatarId(self, creds: Any) -> Any:
        """The first member's avatar id, or UnauthorizedLogin when none accepts."""
        for member in self.members:
            try:
                return (yield member.requestAvatarId(creds))
            except UNAUTHORIZED:
                continue
        raise error.UnauthorizedLogin()


def make_portal(realm: portal.IRealm, checker_list: list[Any], anonymous: bool) -> portal.Portal:
    """A portal over the ``--auth`` checkers (plus anonymous access when asked for)."""
    all_checkers: list[Any] = [AnyOf([EitherEncoding(checker) for checker in checker_list])]
    if anonymous:
        all_checkers.append(checkers.AllowAnonymousAccess())
    return portal.Portal(realm, all_checkers)


class LoginLimiter:
    """At most ``attempts`` failed logins per peer address in ``window`` seconds."""

    def __init__(self, clock: Callable[[], float], attempts: int = 5, window: float = 60.0) -> None:
        self.clock = clock
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def wait(self, peer: str) -> float:
        """Seconds until ``peer`` may try again (0: now)."""
        failures = self._failures.get(peer)
        if not failures:
            return 0.0
        now = self.clock()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[peer]
            return 0.0
        if len(failures) < self.attempts:
            return 0.0
        return failures[0] + self.window - now

    def failed(self, peer: str) -> None:
        """Count a failed login."""
        self._failures.setdefault(peer, deque()).append(self.clock())


def password_credentials(name: str, password: str) -> credentials.UsernamePassword:
    """What a LOGIN request carries, as twisted.cred credentials."""
    return credentials.UsernamePassword(name.encode("utf-8"), password.encode("utf-8"))
