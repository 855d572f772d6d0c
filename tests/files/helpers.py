"""Files-protocol unit tests: a served tree on a fake clock.  The generic moves (a protocol on
a fake wire, the client pair) are the public testing kit's, :mod:`tcpfiles.testing`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import task

from tcpfiles.core.guard import GuardedFactory
from tcpfiles.files.factory import connection_settings
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.testing import files_factory

__all__ = ["make_factory", "served_factory"]


def make_factory(
    root: Path, clock: task.Clock | None = None, defer_to_thread: Any = None, **limits: Any
) -> FileServerFactory:
    """A read-only files factory for ``root`` with these ``Limits`` fields; jobs inline."""
    return files_factory(root, clock, limits=Limits(**limits), defer_to_thread=defer_to_thread)


def served_factory(root: Path, clock: task.Clock | None = None, **limits: Any) -> GuardedFactory:
    """A files factory as twistd listens with it: under the kernel's guard, whose limits
    (per peer, in total, idle) come from the same ``Limits``."""
    factory = make_factory(root, clock, **limits)
    return GuardedFactory(factory, factory.clock, connection_settings(factory.limits))
