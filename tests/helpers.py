"""Helpers for driving any tcpfiles protocol in memory, and for trial-style tests: a temporary
directory per test, one test method per case."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.core.guard import ConnectionSettings, GuardedFactory


def connect(factory, host: str = "192.0.2.7", port: int = 40000):
    """A protocol built by the factory for a peer, on a StringTransport, connected."""
    address = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def guarded(factory, clock=None, **settings) -> GuardedFactory:
    """``factory`` under the kernel's guard, as twistd listens with it; ``settings`` are
    :class:`ConnectionSettings` fields (``idle_timeout=10``), the clock the factory's own."""
    clock = clock or getattr(factory, "clock", None) or task.Clock()
    return GuardedFactory(factory, clock, ConnectionSettings(**settings))


def pump(transport: StringTransport, limit: int = 10_000) -> None:
    """Act as a socket that drains at once: ask a registered pull producer until it is done."""
    for _ in range(limit):
        if transport.producer is None or transport.disconnecting:
            return
        transport.producer.resumeProducing()
    raise AssertionError("producer never finished")


class PausingTransport(StringTransport):
    """Like Twisted's transports: pauses a push producer once it holds more than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and self.streaming and len(self.value()) > self.limit:
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()


def temporary_directory(case: SynchronousTestCase) -> Path:
    """A fresh directory, removed with everything in it when ``case`` is done (not trial's
    ``mktemp``: under pytest that writes into the source tree)."""
    path = Path(tempfile.mkdtemp(prefix="tcpfiles-test-"))
    case.addCleanup(shutil.rmtree, path, True)
    return path


T = TypeVar("T", bound=type)


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
