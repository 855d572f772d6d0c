"""Putting the files behaviour together: store + factory + listeners, for twistd or any app."""

from __future__ import annotations

from typing import Any

from twisted.internet import threads

from tcpfiles.files.paths import Root
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.files.store import FileStore
from tcpfiles.service import DrainingService, ListenerService


def make_files_factory(
    root: str | Root, reactor: Any, limits: Limits | None = None
) -> FileServerFactory:
    """A :class:`FileServerFactory` serving ``root``; hashing runs in the reactor's threadpool."""
    if not isinstance(root, Root):
        root = Root.at(root)

    def defer_to_thread(f: Any, *args: Any) -> Any:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    return FileServerFactory(FileStore(root, defer_to_thread), reactor, limits)


def make_files_service(
    root: str | Root,
    listen: list[str],
    reactor: Any,
    limits: Limits | None = None,
    grace: float = 30.0,
    second_signal_forces: bool = False,
) -> DrainingService:
    """A service serving ``root`` on each endpoint string in ``listen``, drained on stop.

    ``second_signal_forces``: see :class:`~tcpfiles.service.DrainingService`; for a process
    that owns its signals, as under twistd.
    """
    factory = make_files_factory(root, reactor, limits)
    top = DrainingService([factory.tracker], grace, reactor, second_signal_forces)
    for description in listen:
        ListenerService(description, factory, reactor, "files").setServiceParent(top)
    top.factory = factory  # type: ignore[attr-defined]
    return top
