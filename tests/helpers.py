"""Helpers for tcpfiles' own tests that the public kit (:mod:`tcpfiles.testing`) does not offer:
what trial classes use instead of pytest's fixtures and parametrize, a temporary directory per
test and one test method per case."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.trial.unittest import SynchronousTestCase

__all__ = ["cases", "temporary_directory", "with_cases"]


def temporary_directory(case: SynchronousTestCase) -> Path:
    """A fresh directory, removed with everything in it when ``case`` is done (not trial's
    ``mktemp``: under pytest that writes into the source tree)."""
    path = Path(tempfile.mkdtemp(prefix="tcpfiles-test-"))
    case.addCleanup(shutil.rmtree, path, True)
    return path


T = TypeVar("T", bound=type)


def small_socketpair(case: SynchronousTestCase) -> tuple[socket.socket, socket.socket]:
    """A connected pair whose buffers hold a few KiB: ours (non-blocking, to send from) and
    theirs (blocking, to read what was sent); both closed when the test is done."""
    ours, theirs = socket.socketpair()
    case.addCleanup(theirs.close)
    case.addCleanup(ours.close)
    ours.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return ours, theirs


def cases(**named: tuple[Any, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark ``test_x(self, *args)`` to become one test per case, ``test_x_<name>(self)``, in a
    class decorated with :func:`with_cases` (what ``pytest.mark.parametrize`` was)."""

    def mark(method: Callable[..., Any]) -> Callable[..., Any]:
        method.cases = named  # type: ignore[attr-defined]
        return method

    return mark


def with_cases(cls: T) -> T:
    """Replace each method marked by :func:`cases` with one test method per case."""
    for name, method in list(vars(cls).items()):
        named = getattr(method, "cases", None)
        if named is None:
            continue
        delattr(cls, name)
        for case, args in named.items():
            test = _bind(method, args)
            test.__name__ = f"{name}_{case}"
            test.__qualname__ = f"{cls.__qualname__}.{test.__name__}"
            test.__doc__ = method.__doc__
            assert not hasattr(cls, test.__name__), test.__name__
            setattr(cls, test.__name__, test)
    return cls


def _bind(method: Callable[..., Any], args: tuple[Any, ...]) -> Callable[[Any], Any]:
    def test(self: Any) -> Any:
        return method(self, *args)

    return test
