"""Accounts: who may log in (twisted.cred), and what each account may reach.

Checkers come from ``--auth`` in twisted.cred's standard ``strcred`` form (``memory:alice:pw``,
``file:/etc/tcpfiles.passwd``, ``unix``...).  The realm turns an authenticated name into an
:class:`Account`: its own root and whether it may write, from the users file (see
:func:`parse_users`), else the server's ``--root`` and ``--writable``.  Anonymous access (only
with ``--anonymous``) is read-only.  With a users file, accounts are denied by default: a name it
does not list (nor covers with ``*``) is refused like a wrong password.

:func:`make_accounts` builds them once for the whole server (:class:`Accounts`: the realm, the
portal, the :class:`~tcpfiles.core.auth.LoginLimiter` that slows down password guessing per
network and per account); behaviours get them in their :class:`~tcpfiles.core.plugin.Context`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.cred import checkers, credentials, error, portal, strcred
from twisted.internet import threads
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpfiles.core.auth import LoginLimiter, make_portal, text_of
from tcpfiles.core.interfaces import IAccount
from tcpfiles.core.options import byte_limit, byte_rate, size
from tcpfiles.core.plugin import Context
from tcpfiles.core.rates import TokenBucket
from tcpfiles.tree.filecache import MAX_FILES
from tcpfiles.tree.hashing import Hasher, HashLimits, make_hasher
from tcpfiles.tree.interfaces import IFilesAccount
from tcpfiles.tree.paths import Root
from tcpfiles.tree.quota import Quota, Usage
from tcpfiles.tree.store import FileStore
from tcpfiles.tree.uploads import SpaceLedger, Uploads

__all__ = [
    "ANONYMOUS",
    "DEFAULT_MAX_UPLOAD",
    "EVERYONE_ELSE",
    "Account",
    "AccountOptions",
    "Accounts",
    "FilesRealm",
    "Grant",
    "Users",
    "anonymous_root",
    "make_accounts",
    "parse_users",
]

ANONYMOUS = "anonymous"

#: Largest upload accepted unless the server says otherwise (``--max-upload``).
DEFAULT_MAX_UPLOAD = 1 << 30


@implementer(IFilesAccount)
@dataclass(frozen=True)
class Account:
    """One logged-in user (or the anonymous one)."""

    name: str
    store: FileStore
    uploads: Uploads | None
    #: Its ``rate=``: one bucket shared by all its connections (None: no account rate).
    bucket: TokenBucket | None = None
    #: Its ``quota=`` (or ``--quota``) over its root's usage (None: no quota).
    quota: Quota | None = None


@dataclass(frozen=True)
class Grant:
    """A line of the users file: a root, the right to write below it, and its limits."""

    root: Root
    writable: bool
    #: Bytes per second for all the account's connections together; 0: no account rate.
    rate: int = 0
    #: Bytes it may store below its root; None: the server's ``--quota``; 0: no quota.
    quota: int | None = None


#: The users file's name for "every account not listed by name".
EVERYONE_ELSE = "*"


@dataclass(frozen=True)
class Users:
    """What a users file says.  Deny by default: a name it does not list gets nothing.

    ``grants`` by account name; ``default`` (a ``*`` line) for every other account, None to
    refuse them; ``anonymous`` (an ``anonymous`` line, never writable) for anonymous access.
    """

    grants: Mapping[str, Grant]
    default: Grant | None = None
    anonymous: Grant | None = None

    def grant(self, name: str) -> Grant | None:
        """What an authenticated ``name`` may reach, or None: refused."""
        if name == ANONYMOUS:
            return self.anonymous
        return self.grants.get(name, self.default)


def parse_users(path: str, base: Root) -> Users:
    """Read a users file: ``NAME ROOT RIGHTS [rate=R] [quota=Q]`` per line, ``#`` comments.

    ROOT: a directory, relative to ``--root`` (``base``) unless absolute; RIGHTS: ``ro``, ``rw``.
    NAME ``*``: every account not listed; ``anonymous``: anonymous access, ``ro`` only.
    ``rate=``: bytes/s for all its connections together; ``quota=``: bytes it may store (``2M``,
    ``1G``, ``512KiB``; ``0``, ``none``: no limit).  ValueError, with the line number, if wrong.
    """
    lines: dict[str, Grant] = {}
    with open(path, encoding="utf-8") as text:
        for number, line in enumerate(text, 1):
            words = line.split("#", 1)[0].split()
            if words:
                _parse_line(f"{path}:{number}", words, line, base, lines)
    default, anonymous = lines.pop(EVERYONE_ELSE, None), lines.pop(ANONYMOUS, None)
    return Users(lines, default, anonymous)


def _parse_line(
    where: str, words: list[str], line: str, base: Root, lines: dict[str, Grant]
) -> None:
    """Add one users-file line to ``lines``; ValueError naming ``where`` when it is wrong."""
    if len(words) < 3 or words[2] not in ("ro", "rw"):
        raise ValueError(
            f"{where}: expected NAME ROOT ro|rw [rate=R] [quota=Q], got {line.strip()!r}"
        )
    name, root, rights = words[:3]
    limits = _limits(where, words[3:])
    if name in lines:
        raise ValueError(f"{where}: {name} is listed twice")
    if name == ANONYMOUS and rights == "rw":
        raise ValueError(f"{where}: anonymous access is read-only: {ANONYMOUS} ROOT ro")
    directory = root if os.path.isabs(root) else os.path.join(base.path, root)
    try:
        lines[name] = Grant(Root.at(directory), rights == "rw", **limits)
    except NotADirectoryError:
        raise ValueError(f"{where}: {directory} is not a directory") from None


def _limits(where: str, fields: list[str]) -> dict[str, Any]:
    """A users-file line's ``rate=`` and ``quota=`` fields, as Grant's keywords."""
    found: dict[str, Any] = {}
    for field in fields:
        key, equals, value = field.partition("=")
        if not equals or key not in ("rate", "quota") or key in found:
            raise ValueError(f"{where}: expected rate=R or quota=Q (once each), got {field!r}")
        try:
            found[key] = (byte_rate if key == "rate" else byte_limit)(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {key}: {exc}") from None
    return found


@implementer(portal.IRealm)
class FilesRealm:
    """Accounts for files (and any behaviour that only needs the account's name).

    Without a users file (``users`` None, or an empty mapping), every account gets ``root``,
    writable when ``writable``, and anonymous access reads ``root``.  With one (:class:`Users`,
    or a mapping of grants: a users file without ``*`` and ``anonymous`` lines), only what it
    lists: any other name is refused with UnauthorizedLogin, like a wrong password."""

    def __init__(
        self,
        root: Root,
        writable: bool,
        users: Users | Mapping[str, Grant] | None,
        max_upload: int,
        defer_to_thread: Callable[..., Any],
        hasher: Hasher | None = None,
        clock: Any = None,
        quota: int = 0,
    ) -> None:
        self.default = Grant(root, writable)
        if isinstance(users, Mapping):
            users = Users(dict(users)) if users else None
        self.users = users
        self.max_upload = max_upload
        self._defer_to_thread = defer_to_thread
        self.hasher = hasher or Hasher(defer_to_thread)  # shared by every root's store
        self._stores: dict[str, tuple[FileStore, Uploads]] = {}
        self._ledger = SpaceLedger()  # one for all roots: they may share a file system
        self.clock = clock  # the timers of the accounts' rate buckets
        self.quota = quota  # --quota: for every grant without its own (0: none)
        self._buckets: dict[str, TokenBucket] = {}  # by account name: shared by its connections
        self._usage: dict[str, Usage] = {}  # by root: shared by every account of that root

    def store_for(self, root: Root) -> tuple[FileStore, Uploads]:
        """One store and one upload registry per root, shared by everyone who uses it."""
        if root.real not in self._stores:
            kept = 0 if self._stores else MAX_FILES  # one budget: the first root's (--root)
            self._stores[root.real] = (
                FileStore(root, self._defer_to_thread, hasher=self.hasher, keep_open=kept),
                Uploads(root, self.max_upload, self._defer_to_thread, ledger=self._ledger),
            )
        return self._stores[root.real]

    def uploads_in_flight(self) -> int:
        """Uploads in progress below every root (for the metrics)."""
        return sum(uploads.in_flight for _store, uploads in self._stores.values())

    def grant(self, name: str) -> Grant | None:
        """What an authenticated ``name`` may reach (anonymous: never writable); None: nothing."""
        if self.users is None:
            return Grant(self.default.root, False) if name == ANONYMOUS else self.default
        return self.users.grant(name)

    def account(self, name: str) -> Account:
        """The account for an authenticated name; UnauthorizedLogin when it may reach nothing."""
        grant = self.grant(name)
        if grant is None:
            raise error.UnauthorizedLogin()
        store, uploads = self.store_for(grant.root)
        writable = grant.writable and name != ANONYMOUS
        if not writable:
            return Account(name, store, None, self._bucket(name, grant.rate))
        return Account(name, store, uploads, self._bucket(name, grant.rate), self.quota_for(grant))

    def quota_for(self, grant: Grant) -> Quota | None:
        """The storage quota of an account with ``grant`` (its own, else ``--quota``), over its
        root's usage; None when it has none."""
        limit = self.quota if grant.quota is None else grant.quota
        if not limit:
            return None
        if grant.root.real not in self._usage:
            self._usage[grant.root.real] = Usage(grant.root, self.clock, self._defer_to_thread)
        return Quota(limit, self._usage[grant.root.real])

    def _bucket(self, name: str, rate: int) -> TokenBucket | None:
        """The account's rate bucket, one per name, or None without a rate (or a clock)."""
        if not rate or self.clock is None:
            return None
        bucket = self._buckets.get(name)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[name] = TokenBucket(self.clock, rate)
        return bucket

    def requestAvatar(self, avatarId: Any, mind: object, *interfaces: Any) -> Any:
        """twisted.cred: the avatar for an authenticated id (UnauthorizedLogin: not allowed)."""
        name = ANONYMOUS if avatarId is checkers.ANONYMOUS else text_of(avatarId)
        for interface in interfaces:
            if interface in (IFilesAccount, IAccount):
                return interface, self.account(name), lambda: None
        raise NotImplementedError("tcpfiles accounts only provide IAccount and IFilesAccount")


def anonymous_root(portal: Any) -> Root | None:
    """The root an anonymous login through ``portal`` reaches, or None when it is refused.

    The realm answers at once (tcpfiles' does); one that would answer later counts as a
    refusal, so nothing is ever served by mistake.
    """
    found: list[Root] = []

    def refused(failure: Failure) -> None:
        failure.trap(error.UnauthorizedLogin, error.UnhandledCredentials)

    d = portal.login(credentials.Anonymous(), None, IFilesAccount)
    d.addCallbacks(lambda result: found.append(result[1].store.root), refused)
    return found[0] if found else None


@dataclass(frozen=True)
class Accounts:
    """Who may log in and what each account reaches: built once, for every behaviour served."""

    #: makes the accounts, and one store and upload registry per root, shared by everyone
    realm: FilesRealm
    #: the twisted.cred portal over the checkers (``--auth``), or None: no logins at all
    portal: portal.Portal | None
    #: failed logins, per network and per account, counted for every behaviour together
    limiter: LoginLimiter

    def context(self, reactor: Any) -> Context:
        """The whole server's context: the realm's root, writable as it says, these accounts."""
        default = self.realm.default
        return Context(
            reactor, default.root, self.portal, self.limiter, default.writable, self.realm
        )


def make_accounts(
    root: str | Root,
    reactor: Any,
    *,
    writable: bool = False,
    checkers: Sequence[Any] | None = None,
    users: Users | Mapping[str, Grant] | None = None,
    anonymous: bool = False,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    hashing: HashLimits | None = None,
    hasher: Hasher | None = None,
    quota: int = 0,
) -> Accounts:
    """The accounts of a server serving ``root`` (``--root``).

    Without ``checkers`` (twisted.cred; ``--auth``) there are no logins: every behaviour serves
    ``root``, writable when ``writable``.  With them, ``users`` (a users file, see
    :func:`parse_users`) gives accounts their own roots and rights and refuses the others, and
    ``anonymous`` lets anyone read without logging in (``root``, or the users file's
    ``anonymous`` root: ValueError when it has none).  ``max_upload`` bounds every upload;
    ``quota`` (0: none) the bytes each writable root may hold, unless its users-file line says.
    ``hashing`` bounds STAT's hashing (:class:`~tcpfiles.tree.hashing.HashLimits`); ``hasher``
    is one to use instead of a new one (e.g. ``Hasher(tcpfiles.tree.hashing.inline)``, which
    hashes at once, for tests and tools).

    Upload fsyncs run on the reactor's thread pool; hashing runs on a pool of its own
    (:func:`~tcpfiles.tree.hashing.make_hasher`), so an fsync never waits behind a hash.
    """
    if not isinstance(root, Root):
        root = Root.at(root)

    def defer_to_thread(f: Any, *args: Any) -> Any:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    realm = FilesRealm(root, writable, users, max_upload, defer_to_thread, None, reactor, quota)
    if checkers and anonymous and realm.grant(ANONYMOUS) is None:  # before any pool or trigger
        raise ValueError("anonymous access with a users file needs an 'anonymous ROOT ro' line")
    realm.hasher = hasher or make_hasher(reactor, hashing or HashLimits())  # before any store
    cred_portal = make_portal(realm, list(checkers), anonymous) if checkers else None
    return Accounts(realm, cred_portal, LoginLimiter(reactor.seconds))


class AccountOptions(usage.Options, strcred.AuthOptionMixin):
    """The accounts of a server's command line: ``--auth`` (twisted.cred's strcred strings),
    ``--users``, ``--anonymous``, ``--writable``, ``--max-upload`` and ``--quota``."""

    supportedInterfaces = [credentials.IUsernamePassword]
    optParameters: list[list[Any]] = [
        [
            "max-upload",
            None,
            DEFAULT_MAX_UPLOAD,
            "Largest upload accepted (with --writable).",
            size,
        ],
        [
            "quota",
            None,
            0,
            "Bytes each account may store, with --writable (quota= in --users wins).",
            byte_limit,
        ],
        [
            "users",
            None,
            None,
            "With --auth: a file of 'NAME ROOT ro|rw [rate=R] [quota=Q]' lines giving accounts "
            "their own root (relative to --root), rights and limits; accounts not listed are "
            "refused, unless a '* ROOT ro|rw' line covers them ('anonymous ROOT ro' for "
            "--anonymous). Without it, every account gets --root and --writable.",
        ],
    ]
    optFlags: list[list[Any]] = [
        ["writable", "w", "Accept uploads: PUT, REPLACE and MKDIR (off by default)."],
        [
            "anonymous",
            None,
            "With --auth: allow read-only access to --root (with --users: to its 'anonymous' "
            "line's root) without a login.",
        ],
    ]

    def check_accounts(self, root: Root) -> None:
        """Read --users below ``root`` into ``self["grants"]`` (None without it); UsageError
        for options that need --auth without it, and for a users file that does not fit."""
        self["grants"] = None  # no users file: every account gets --root (and --writable)
        if not self.get("credCheckers"):
            for option in ("users", "anonymous"):
                if self[option]:
                    raise usage.UsageError(f"--{option} needs --auth")
            return
        if self["users"]:
            try:
                self["grants"] = users = parse_users(self["users"], root)
            except (OSError, ValueError) as exc:
                raise usage.UsageError(f"--users: {exc}") from None
            self._check_anonymous(users)

    def _check_anonymous(self, users: Users) -> None:
        """With a users file, anonymous access is listed there too, or not at all."""
        if self["anonymous"] and users.anonymous is None:
            raise usage.UsageError(
                f"--anonymous: {self['users']} has no 'anonymous ROOT ro' line "
                "(with --users, anonymous access reads only what that line names)"
            )
        if users.anonymous is not None and not self["anonymous"]:
            raise usage.UsageError(
                f"--users: {self['users']} has an anonymous line but --anonymous is not given"
            )
