"""Logging in: twisted.cred portal helpers, password checkers, and the failed-login limiter.

Shared by every behaviour that logs users in.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.cred import checkers, credentials, error, portal
from twisted.internet import defer
from zope.interface import implementer

__all__ = [
    "UNAUTHORIZED",
    "AnyOf",
    "EitherEncoding",
    "LoginLimiter",
    "bytes_of",
    "make_portal",
    "network_of",
    "password_credentials",
    "text_of",
]

UNAUTHORIZED = (error.UnauthorizedLogin, error.UnhandledCredentials)


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
        as_bytes = credentials.UsernamePassword(bytes_of(creds.username), bytes_of(creds.password))
        # Typed as bytes in Twisted, but the memory: checker only ever matches str.
        as_text = credentials.UsernamePassword(
            text_of(creds.username),  # type: ignore[arg-type]
            text_of(creds.password),  # type: ignore[arg-type]
        )

        def as_str(failure: Any) -> Any:
            failure.trap(*UNAUTHORIZED)
            return self.checker.requestAvatarId(as_text)

        d: defer.Deferred[Any] = defer.maybeDeferred(self.checker.requestAvatarId, as_bytes)
        return d.addErrback(as_str).addCallback(text_of)


def bytes_of(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def text_of(value: bytes | str) -> str:
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


def network_of(peer: str) -> str:
    """The network a peer address counts in: its /24 for IPv4, /64 for IPv6.

    An IPv4-mapped IPv6 address counts as IPv4; anything that is not an IP address (a UNIX
    socket's key) is its own network.
    """
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return f"{ipaddress.IPv4Address(int(address) & ~0xFF)}/24"
    return f"{ipaddress.IPv6Address(int(address) & ~(2**64 - 1))}/64"


@dataclass(slots=True)
class _Failures:
    """Failed logins of one network or one account: how many in a row, and the latest ones."""

    recent: list[float]  # the last few failures' times, oldest first (a deque costs 600 bytes)
    count: int = 0

    @property
    def last(self) -> float:
        return self.recent[-1]


class _Table:
    """The entries of one kind, each kept in order of its last failure.

    "Heavy" entries (being limited) are kept apart from light ones so that a full limiter
    forgets light ones first.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.light: OrderedDict[str, _Failures] = OrderedDict()
        self.heavy: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self.light) + len(self.heavy)

    def get(self, key: str, now: float) -> _Failures | None:
        """The live entry for ``key`` (an expired one is dropped)."""
        entry = self.light.get(key) or self.heavy.get(key)
        if entry is not None and entry.last + self.ttl <= now:
            self.light.pop(key, None)
            self.heavy.pop(key, None)
            return None
        return entry

    def put(self, key: str, entry: _Failures, heavy: bool) -> None:
        """Store ``entry`` (just updated) as the newest of its weight."""
        self.light.pop(key, None)
        self.heavy.pop(key, None)
        (self.heavy if heavy else self.light)[key] = entry

    def expire(self, now: float) -> None:
        """Drop the entries whose last failure is ``ttl`` old (they are oldest first)."""
        for entries in (self.light, self.heavy):
            while entries and next(iter(entries.values())).last + self.ttl <= now:
                entries.popitem(last=False)


class LoginLimiter:
    """Slows password guessing, per network and per account, in bounded memory.

    - A network (IPv4 /24, IPv6 /64) may fail ``attempts`` logins in ``window`` seconds; then
      it waits until the oldest of those is ``window`` old.
    - An account (whatever name is tried, from any address) may fail ``account_attempts``
      logins in a row; after that each try waits ``base_delay`` seconds after the last
      failure, doubling with each further failure up to ``max_delay``.  An account forgets its
      failures ``forget`` seconds after the last one; a network, ``window`` seconds after.
    - At most ``max_keys`` networks and accounts are tracked.  When full, the limiter forgets
      the entry whose last failure is oldest among those not being limited (else the oldest
      of all): it never refuses a login for want of room, so filling it cannot lock anyone out;
      an attacker able to fail logins from more than ``max_keys`` networks can make it forget.

    A successful login resets nothing (else an attacker who knows one password could reset
    the limits).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        attempts: int = 5,
        window: float = 60.0,
        account_attempts: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        forget: float = 3600.0,
        max_keys: int = 10_000,
    ) -> None:
        self.clock = clock
        self.attempts = attempts
        self.account_attempts = account_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_keys = max_keys
        self._networks = _Table(window)
        self._accounts = _Table(max(forget, max_delay))
        #: Failed logins counted so far, every behaviour's (for the metrics).
        self.failures = 0

    @property
    def window(self) -> float:
        """Seconds a network's failures count."""
        return self._networks.ttl

    def __len__(self) -> int:
        """Networks and accounts tracked."""
        return len(self._networks) + len(self._accounts)

    def wait(self, peer: str, account: str | None = None) -> float:
        """Seconds until ``peer`` may try to log in as ``account``, rounded up (0: now).

        ``account`` None (callers written before per-account limits): the network only.
        """
        now = self.clock()
        self._expire(now)
        wait = self._network_wait(network_of(peer), now)
        if account is not None:
            wait = max(wait, self._account_wait(account, now))
        return float(math.ceil(wait))

    def failed(self, peer: str, account: str | None = None) -> None:
        """Count a failed login as ``account`` (None: unknown, the network only) from ``peer``."""
        now = self.clock()
        self.failures += 1
        self._count(self._networks, network_of(peer), now, self.attempts, self.attempts)
        if account is not None:
            key = _account_key(account)
            self._count(self._accounts, key, now, self.account_attempts, keep=1)
        self._expire(now)
        while len(self) > self.max_keys:
            self._evict()

    def _expire(self, now: float) -> None:
        self._networks.expire(now)
        self._accounts.expire(now)

    def _network_wait(self, network: str, now: float) -> float:
        entry = self._networks.get(network, now)
        if entry is None or len(entry.recent) < self.attempts:
            return 0.0
        return max(0.0, entry.recent[0] + self.window - now)

    def _account_wait(self, account: str, now: float) -> float:
        entry = self._accounts.get(_account_key(account), now)
        if entry is None or entry.count < self.account_attempts:
            return 0.0
        delay = self.base_delay * 2.0 ** min(entry.count - self.account_attempts, 64)
        return max(0.0, entry.last + min(delay, self.max_delay) - now)

    def _count(self, table: _Table, key: str, now: float, limit: int, keep: int) -> None:
        """One more failure for ``key``, keeping the times of the last ``keep``."""
        entry = table.get(key, now) or _Failures([])
        entry.recent.append(now)
        del entry.recent[: -max(1, keep)]
        entry.count += 1
        table.put(key, entry, heavy=entry.count >= limit)

    def _evict(self) -> None:
        """Forget one entry: the oldest light one, else the oldest heavy one."""
        for weight in ("light", "heavy"):
            tables = [t for t in (self._networks, self._accounts) if getattr(t, weight)]
            if tables:
                oldest = min(tables, key=lambda t: next(iter(getattr(t, weight).values())).last)
                getattr(oldest, weight).popitem(last=False)
                return


def _account_key(name: str) -> str:
    """The key an account name counts under (bounded: a long name costs no more memory)."""
    return name[:128]


def password_credentials(name: str, password: str) -> credentials.UsernamePassword:
    """What a LOGIN request carries, as twisted.cred credentials."""
    return credentials.UsernamePassword(name.encode("utf-8"), password.encode("utf-8"))
