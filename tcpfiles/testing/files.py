"""The files client against a real files server, in memory: no sockets, no threads.

In the spirit of ``treq.testing.StubTreq``: :class:`StubFiles` hands out real
:class:`~tcpfiles.files.client.FilesClient` objects connected to a real
:class:`~tcpfiles.files.server.FileServerFactory` through ``twisted.test.iosim``, so code written
against the client API (``tcpfiles.files.transfer.fetch``, a ``Session``) is tested as it runs,
and the bytes move when the test says so::

    stub = StubFiles.serving(root, writable=True)
    client = stub.client()
    d = client.stat("notes.txt")
    stub.flush()
    info = self.successResultOf(d)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer, interfaces, task
from twisted.internet.address import IPv4Address
from twisted.python.failure import Failure
from twisted.test import iosim

from tcpfiles.core.guard import GuardedFactory
from tcpfiles.files.client import FilesClient
from tcpfiles.files.client_protocol import FilesClientProtocol
from tcpfiles.files.factory import connection_settings
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.tree.accounts import DEFAULT_MAX_UPLOAD
from tcpfiles.tree.hashing import inline
from tcpfiles.tree.paths import Root
from tcpfiles.tree.store import FileStore
from tcpfiles.tree.uploads import Uploads

#: Where in-memory clients connect from, and the server they reach.
CLIENT_ADDRESS = IPv4Address("TCP", "192.0.2.8", 40001)
SERVER_ADDRESS = IPv4Address("TCP", "127.0.0.1", 8888)
#: Pumps :meth:`StubFiles.flush` makes at most before it gives up (a server that never stops).
FLUSH_LIMIT = 100_000


def files_factory(
    root: str | Path | Root,
    clock: interfaces.IReactorTime | None = None,
    *,
    limits: Limits | None = None,
    writable: bool = False,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    defer_to_thread: Any = None,
) -> FileServerFactory:
    """A files server factory for ``root`` whose thread jobs (STAT's hashing, LIST's batches,
    an upload's fsync) run inline, at once: what tests want, where the server's own factory
    (:func:`tcpfiles.files.make_files_factory`) runs them on thread pools.

    ``clock``: its timers (a new ``task.Clock`` by default).  ``limits``: the files bounds
    (:class:`tcpfiles.files.Limits`).  ``writable``: accept uploads (up to ``max_upload``).
    ``defer_to_thread(f, *args)``: to run the jobs some other way (one that never fires tests
    a request still waiting for its job).  No accounts: wrap your own factory for logins.
    """
    served = root if isinstance(root, Root) else Root.at(str(root))
    run = defer_to_thread or inline
    uploads = Uploads(served, max_upload, run) if writable else None
    return FileServerFactory(FileStore(served, run), clock or task.Clock(), limits, uploads)


def client_pair(
    factory: interfaces.IProtocolFactory,
    clock: Any = None,
    timeout: float | None = None,
) -> tuple[FilesClient, iosim.IOPump]:
    """A :class:`FilesClient` connected in memory to a protocol of ``factory``, and the pump
    that moves their bytes (``pump.pump()`` once, ``pump.flush()`` until quiet).

    ``clock`` is the client's (for its stall ``timeout``) and the one the pump advances by 0
    to run what is due now; by default the factory's ``clock``, else the pump's own.
    """
    clock = clock if clock is not None else getattr(factory, "clock", None)
    client_protocol = FilesClientProtocol(clock, timeout)
    server_protocol = factory.buildProtocol(CLIENT_ADDRESS)
    if server_protocol is None:
        raise ValueError(f"{factory!r} refused the connection (buildProtocol returned None)")
    server_io = iosim.FakeTransport(server_protocol, True, SERVER_ADDRESS, CLIENT_ADDRESS)  # type: ignore[no-untyped-call]
    client_io = iosim.FakeTransport(client_protocol, False, CLIENT_ADDRESS, SERVER_ADDRESS)  # type: ignore[no-untyped-call]
    pump = iosim.connect(  # type: ignore[no-untyped-call]
        server_protocol,
        server_io,
        client_protocol,
        client_io,
        greet=False,
        clock=clock,
    )
    pump.flush()
    return FilesClient(client_protocol), pump


def settle(d: defer.Deferred[Any], pump: Any, limit: int = 5000) -> Any:
    """Pump bytes until ``d`` fires; its result, or its ``Failure`` (returned, not raised).
    AssertionError if it has not fired after ``limit`` pumps."""
    results: list[Any] = []
    d.addBoth(results.append)
    for _ in range(limit):
        if results:
            break
        pump.pump()
    assert results, "no answer"
    return results[0]


class StubFiles:
    """In-memory files clients of one server factory (any factory speaking files: a
    ``FileServerFactory``, one behind the kernel's guard, one with logins).

    :meth:`client` connects a new client; :meth:`connect` is the same as a Deferred, the shape
    of a ``Session``'s ``connector``; :meth:`flush` moves the bytes of every connection until
    they are quiet.  ``clock``: the server's timers and the clients' (by default the factory's).
    """

    def __init__(self, factory: interfaces.IProtocolFactory, clock: Any = None) -> None:
        self.factory = factory
        self.clock = clock if clock is not None else getattr(factory, "clock", None)
        if self.clock is None:
            self.clock = task.Clock()
        self._pumps: list[iosim.IOPump] = []

    @classmethod
    def serving(
        cls,
        root: str | Path | Root,
        clock: Any = None,
        *,
        writable: bool = False,
        limits: Limits | None = None,
    ) -> StubFiles:
        """A stub of a files server for ``root`` as the server runs it: behind the kernel's
        guard (its limits and idle timeout from ``limits``), jobs inline (:func:`files_factory`)."""
        factory = files_factory(root, clock, limits=limits, writable=writable)
        return cls(GuardedFactory(factory, factory.clock, connection_settings(limits)))

    def client(self, timeout: float | None = None) -> FilesClient:
        """A new client, connected (``timeout``: its stall timeout, on :attr:`clock`)."""
        client, pump = client_pair(self.factory, self.clock, timeout)
        self._pumps.append(pump)
        return client

    def connect(self) -> defer.Deferred[FilesClient]:
        """:meth:`client` as a Deferred: ``Session(clock, "stub", connector=stub.connect)``."""
        return defer.succeed(self.client())

    def flush(self, limit: int = FLUSH_LIMIT) -> None:
        """Move bytes both ways on every connection until none moves (connections closed on
        both sides are forgotten); AssertionError after ``limit`` rounds."""
        for _ in range(limit):
            moved = False
            for pump in self._pumps:
                moved = pump.pump() or moved  # type: ignore[no-untyped-call]
            self._pumps = [
                p for p in self._pumps if not (p.clientIO.disconnected and p.serverIO.disconnected)
            ]
            if not moved:
                return
        raise AssertionError(f"connections still busy after {limit} pumps")

    def result_of(self, d: defer.Deferred[Any]) -> Any:
        """:meth:`flush`, then ``d``'s result; its exception raised if it failed, and
        AssertionError if it has not fired."""
        self.flush()
        results: list[Any] = []
        d.addBoth(results.append)
        if not results:
            raise AssertionError(f"{d!r} has not fired after a flush")
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]
