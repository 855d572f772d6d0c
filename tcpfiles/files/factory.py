"""Putting the files behaviour together: store + factory + listeners, for twistd or any app."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tcpfiles.core.connections import ConnectionTracker
from tcpfiles.core.guard import ConnectionSettings, guard_stream
from tcpfiles.core.plugin import Context
from tcpfiles.core.service import DrainingService, ListenerService
from tcpfiles.files.metrics import RequestMetrics
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.tree.accounts import (
    ANONYMOUS,
    DEFAULT_MAX_UPLOAD,
    Grant,
    Users,
    anonymous_root,
    make_accounts,
)
from tcpfiles.tree.hashing import Hasher, HashLimits, make_hasher
from tcpfiles.tree.paths import Root
from tcpfiles.tree.sweep import StaleTemporaries

#: DEFAULT_MAX_UPLOAD, StaleTemporaries and make_hasher live in tcpfiles.tree now; they are still
#: importable from here.
__all__ = [
    "DEFAULT_MAX_UPLOAD",
    "StaleTemporaries",
    "connection_settings",
    "make_files_factory",
    "make_files_service",
    "make_hasher",
]


def make_files_factory(
    root: str | Root,
    reactor: Any,
    limits: Limits | None = None,
    writable: bool = False,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    checkers: list[Any] | None = None,
    grants: Users | Mapping[str, Grant] | None = None,
    anonymous: bool = False,
    hashing: HashLimits | None = None,
    hasher: Hasher | None = None,
) -> FileServerFactory:
    """A :class:`FileServerFactory` serving ``root``, with accounts of its own.

    Uploads (PUT, REPLACE, MKDIR) are refused unless ``writable``.  With ``checkers``
    (twisted.cred), connections must LOGIN; ``grants`` (a users file, see
    :func:`~tcpfiles.tree.accounts.parse_users`) gives accounts their own roots and rights and
    refuses the others; ``anonymous`` allows read-only access without logging in (to ``root``,
    or to the users file's ``anonymous`` root).  ``hashing`` bounds STAT's hashing (see
    :class:`~tcpfiles.tree.hashing.HashLimits`); ``hasher`` is one to use instead of a new one
    (shared by several factories, their hashing bounds are shared too; or one that hashes
    inline, for tests and tools: ``Hasher(tcpfiles.tree.hashing.inline)``).  See
    :func:`~tcpfiles.tree.accounts.make_accounts`; to serve files beside other behaviours with
    one set of accounts, use :func:`tcpfiles.compose.make_service`.

    Connection limits, the idle timeout and draining are the kernel's: listen with
    ``GuardedFactory(factory, reactor, connection_settings(limits))``
    (:mod:`tcpfiles.core.guard`), as :func:`tcpfiles.compose.make_service` and
    :func:`make_files_service` do.
    """
    accounts = make_accounts(
        root,
        reactor,
        writable=writable,
        checkers=checkers,
        users=grants,
        anonymous=anonymous,
        max_upload=max_upload,
        hashing=hashing,
        hasher=hasher,
    )
    return factory_for(accounts.context(reactor), limits)


def factory_for(context: Context, limits: Limits | None = None) -> FileServerFactory:
    """A :class:`FileServerFactory` serving what ``context`` gives it.

    Its root (writable as ``context.writable`` says) through the realm's store and uploads; with
    a portal, connections must LOGIN and get what their account reaches, and anonymous users
    (when the portal lets them in) read the anonymous view.  A context without a realm (made by
    hand) gets accounts of its own, without logins.
    """
    if context.root is None:
        raise ValueError("files needs a root to serve")
    realm = context.realm
    if realm is None:
        realm = make_accounts(context.root, context.reactor, writable=context.writable).realm
    store, uploads = realm.store_for(context.root)
    anonymous_view = None if context.portal is None else anonymous_root(context.portal)
    factory = FileServerFactory(
        store,
        context.reactor,
        limits,
        uploads if context.writable else None,
        context.portal,
        anonymous_view is not None,
        context.limiter,
        anonymous_store=None if anonymous_view is None else realm.store_for(anonymous_view)[0],
        quota=realm.quota_for(Grant(context.root, True)) if context.writable else None,
    )
    if context.metrics.enabled:
        factory.record_request = RequestMetrics(context.metrics)
    if anonymous_view is not None:  # the anonymous line's rate=: one bucket for all of them
        bucket = realm.account(ANONYMOUS).bucket
        factory.default_account = replace(factory.default_account, bucket=bucket)
    return factory


def connection_settings(limits: Limits | None) -> ConnectionSettings:
    """The kernel's limits for files: ``--idle-timeout``, ``--max-per-peer``,
    ``--max-connections`` (the ``Limits`` they are parsed into)."""
    limits = limits or Limits()
    return ConnectionSettings(limits.idle_timeout, limits.max_per_peer, limits.max_connections)


def make_files_service(
    root: str | Root,
    listen: list[str],
    reactor: Any,
    limits: Limits | None = None,
    grace: float = 30.0,
    second_signal_forces: bool = False,
) -> DrainingService:
    """A service serving ``root`` on each endpoint string in ``listen``, drained on stop.

    Its connections are limited and timed out as ``limits`` say (by the kernel's guard, which
    is ``top.factory``: its ``wrappedFactory`` is the files factory).  ``second_signal_forces``:
    see :class:`~tcpfiles.core.service.DrainingService`; for a process that owns its signals, as
    under twistd.
    """
    trackers: list[ConnectionTracker] = []
    factory = guard_stream(
        make_files_factory(root, reactor, limits), connection_settings(limits), reactor, trackers
    )
    top = DrainingService(trackers, grace, reactor, second_signal_forces)
    for description in listen:
        ListenerService(description, factory, reactor, "files").setServiceParent(top)
    top.factory = factory  # type: ignore[attr-defined]
    return top
