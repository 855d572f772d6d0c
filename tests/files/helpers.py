"""In-memory helpers for files-protocol unit tests: a served tree, a protocol on a fake wire."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from tcpfiles.files.paths import Root
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.files.store import FileStore


def make_factory(
    root: Path, clock: task.Clock | None = None, defer_to_thread=None, **limits
) -> FileServerFactory:
    store = FileStore(Root.at(str(root)), defer_to_thread)
    return FileServerFactory(store, clock or task.Clock(), Limits(**limits))


def connect(factory: FileServerFactory, host: str = "192.0.2.7", port: int = 40000):
    """A protocol built by the factory, on a StringTransport, connected."""
    address = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def pump(transport: StringTransport, limit: int = 10_000) -> None:
    """Act as a socket that drains at once: ask a registered pull producer until it is done."""
    for _ in range(limit):
        if transport.producer is None or transport.disconnecting:
            return
        transport.producer.resumeProducing()
    raise AssertionError("producer never finished")


def respond(protocol, transport: StringTransport, data: bytes, byte_by_byte: bool = False) -> bytes:
    """Feed request bytes (whole or one at a time), let bodies flow, return what was sent."""
    transport.clear()
    pieces = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
    for piece in pieces:
        protocol.dataReceived(piece)
        pump(transport)
    return transport.value()
