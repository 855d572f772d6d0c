"""Putting the files behaviour together: store + factory + listeners, for twistd or any app."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet import threads

from tcpfiles.core.auth import make_portal
from tcpfiles.core.service import DrainingService, ListenerService
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.tree.accounts import ANONYMOUS, DEFAULT_MAX_UPLOAD, FilesRealm, Grant, Users
from tcpfiles.tree.hashing import Hasher, HashLimits, make_hasher
from tcpfiles.tree.paths import Root
from tcpfiles.tree.uploads import StaleTemporaries

#: DEFAULT_MAX_UPLOAD, StaleTemporaries and make_hasher live in tcpfiles.tree now; they are still
#: importable from here.
__all__ = [
    "DEFAULT_MAX_UPLOAD",
    "StaleTemporaries",
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
    """A :class:`FileServerFactory` serving ``root``.

    Uploads (PUT, REPLACE, MKDIR) are refused unless ``writable``.  With ``checkers``
    (twisted.cred), connections must LOGIN; ``grants`` (a users file, see
    :func:`~tcpfiles.tree.accounts.parse_users`) gives accounts their own roots and rights and
    refuses the others; ``anonymous`` allows read-only access without logging in (to ``root``,
    or to the users file's ``anonymous`` root).  ``hashing`` bounds STAT's hashing (see
    :class:`~tcpfiles.tree.hashing.HashLimits`); ``hasher`` is one to use instead of a new one
    (shared by several factories, their hashing bounds are shared too; or one that hashes
    inline, for tests and tools: ``Hasher(tcpfiles.tree.hashing.inline)``).

    Upload fsyncs run on the reactor's thread pool; hashing runs on a pool of its own
    (:func:`~tcpfiles.tree.hashing.make_hasher`), so an fsync never waits behind a hash.
    """
    if not isinstance(root, Root):
        root = Root.at(root)

    def defer_to_thread(f: Any, *args: Any) -> Any:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    realm = FilesRealm(root, writable, grants, max_upload, defer_to_thread)
    if checkers and anonymous and realm.grant(ANONYMOUS) is None:  # before any pool or trigger
        raise ValueError("anonymous access with a users file needs an 'anonymous ROOT ro' line")
    realm.hasher = hasher or make_hasher(reactor, hashing or HashLimits())  # before any store
    store, uploads = realm.store_for(root)
    portal = make_portal(realm, checkers, anonymous) if checkers else None
    anonymous_store = realm.account(ANONYMOUS).store if portal and anonymous else None
    return FileServerFactory(
        store,
        reactor,
        limits,
        uploads if writable else None,
        portal,
        anonymous,
        anonymous_store=anonymous_store,
    )


def make_files_service(
    root: str | Root,
    listen: list[str],
    reactor: Any,
    limits: Limits | None = None,
    grace: float = 30.0,
    second_signal_forces: bool = False,
) -> DrainingService:
    """A service serving ``root`` on each endpoint string in ``listen``, drained on stop.

    ``second_signal_forces``: see :class:`~tcpfiles.core.service.DrainingService`; for a process
    that owns its signals, as under twistd.
    """
    factory = make_files_factory(root, reactor, limits)
    top = DrainingService([factory.tracker], grace, reactor, second_signal_forces)
    for description in listen:
        ListenerService(description, factory, reactor, "files").setServiceParent(top)
    top.factory = factory  # type: ignore[attr-defined]
    return top
