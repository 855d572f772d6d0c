"""The files server's factory: one per listening store, embeddable in any Twisted program.

A connection is a :class:`~tcpfiles.files.protocol.FileServerProtocol`; the bounds it enforces
are :class:`~tcpfiles.files.limits.Limits`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet import defer, interfaces
from twisted.internet.protocol import Factory, Protocol

from tcpfiles.core.auth import LoginLimiter
from tcpfiles.files import wire
from tcpfiles.files.limits import BAD_REQUESTS_LOGGED, REQUESTS_PER_TURN, Limits
from tcpfiles.files.protocol import FileServerProtocol
from tcpfiles.tree.accounts import ANONYMOUS, Account
from tcpfiles.tree.interfaces import IFileStore
from tcpfiles.tree.quota import Quota
from tcpfiles.tree.uploads import Uploads

__all__ = [
    "BAD_REQUESTS_LOGGED",
    "REQUESTS_PER_TURN",
    "FileServerFactory",
    "FileServerProtocol",
    "Limits",
]


class FileServerFactory(Factory):
    """Builds :class:`FileServerProtocol` for one store; embeddable in any Twisted program.

    ``clock`` is the reactor (or a ``task.Clock`` in tests); it is used for timeouts only.
    """

    def __init__(
        self,
        store: IFileStore,
        clock: interfaces.IReactorTime,
        limits: Limits | None = None,
        uploads: Uploads | None = None,
        portal: Portal | None = None,
        anonymous: bool = False,
        limiter: LoginLimiter | None = None,
        anonymous_store: IFileStore | None = None,
        quota: Quota | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.clock = clock
        self.store = store
        self.uploads = uploads  # None: a read-only server
        self.portal = portal  # with accounts (--auth): connections must LOGIN
        # not ``limiter or``: a LoginLimiter has a length, and a shared one is empty at first
        self.limiter = limiter if limiter is not None else LoginLimiter(clock.seconds)
        #: Shared by every connection's LIST: batches read in the thread pool at once.
        self.list_reads = defer.DeferredSemaphore(self.limits.max_list_reads)
        #: Called with (request, outcome, nbytes, seconds) once per request when metrics are
        #: on (:class:`tcpfiles.files.metrics.RequestMetrics`); None: nothing to do.
        self.record_request: Callable[[str, str, int, float], None] | None = None
        if portal is None:
            # without logins, everyone shares one account: its root's quota (``--quota``)
            self.default_account: Any = Account("-", store, uploads, None, quota)  # type: ignore[arg-type]
        elif anonymous:  # what the users file lets anonymous read (anonymous_store), else store
            anonymous_view = anonymous_store or store
            self.default_account = Account(ANONYMOUS, anonymous_view, None)  # type: ignore[arg-type]
        else:
            self.default_account = None

    def buildProtocol(self, addr: interfaces.IAddress | None) -> Protocol:
        """A files protocol."""
        return FileServerProtocol(self)

    def refusal_message(self, reason: str) -> bytes:
        """``ERR busy <reason>``."""
        return wire.err_line("busy", reason)
