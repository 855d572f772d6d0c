"""In-memory helpers for files-protocol unit tests: a served tree, a protocol on a fake wire."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import task
from twisted.internet.testing import StringTransport

from tcpfiles.core.guard import GuardedFactory
from tcpfiles.files.factory import connection_settings
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.tree.paths import Root
from tcpfiles.tree.store import FileStore
from tests.helpers import connect, pump

__all__ = ["connect", "make_factory", "pump", "respond", "served_factory"]


def make_factory(
    root: Path, clock: task.Clock | None = None, defer_to_thread=None, **limits
) -> FileServerFactory:
    store = FileStore(Root.at(str(root)), defer_to_thread)
    return FileServerFactory(store, clock or task.Clock(), Limits(**limits))


def served_factory(root: Path, clock: task.Clock | None = None, **limits) -> GuardedFactory:
    """A files factory as twistd listens with it: under the kernel's guard, whose limits
    (per peer, in total, idle) come from the same ``Limits``."""
    factory = make_factory(root, clock, **limits)
    return GuardedFactory(factory, factory.clock, connection_settings(factory.limits))


def respond(protocol, transport: StringTransport, data: bytes, byte_by_byte: bool = False) -> bytes:
    """Feed request bytes (whole or one at a time), let bodies flow, return what was sent."""
    transport.clear()
    pieces = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
    for piece in pieces:
        protocol.dataReceived(piece)
        pump(transport)
    return transport.value()


def client_pair(factory: FileServerFactory):
    """A FilesClient connected to ``factory``'s protocol in memory (iosim); (client, pump)."""
    from twisted.test import iosim

    from tcpfiles.files.client import FilesClient, FilesClientProtocol

    client_protocol = FilesClientProtocol()
    server_protocol = factory.buildProtocol(None)
    pump = iosim.connect(
        server_protocol,
        iosim.makeFakeServer(server_protocol),
        client_protocol,
        iosim.makeFakeClient(client_protocol),
        greet=False,
    )
    pump.flush()
    return FilesClient(client_protocol), pump


def settle(d, pump):
    """Pump bytes until the Deferred fires; its result (or Failure)."""
    results = []
    d.addBoth(results.append)
    for _ in range(5000):
        if results:
            break
        pump.pump()
    assert results, "no answer"
    return results[0]
