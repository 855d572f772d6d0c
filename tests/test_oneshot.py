"""The tutorial's one-shot protocol on fake transports."""

from __future__ import annotations

import os

import pytest
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from tcpfiles.files.paths import Root
from tcpfiles.files.store import FileStore
from tcpfiles.oneshot import OneShotFactory, OneShotOptions
from tests.files.helpers import pump


@pytest.fixture
def root(tmp_path):
    served = tmp_path / "files"
    served.mkdir()
    (served / "notes.txt").write_bytes(b"hello\n")
    (served / "big.bin").write_bytes(os.urandom(3 << 20))
    os.symlink("/etc/passwd", served / "escape")
    os.mkfifo(served / "fifo")
    return served


def start(root, clock):
    options = OneShotOptions()
    options.parseOptions([])
    factory = OneShotFactory(FileStore(Root.at(str(root))), clock, options)
    protocol = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_name_then_newline_gets_the_file(root):
    """A name ended by a newline is answered at once with the file, then closed."""
    protocol, transport = start(root, task.Clock())
    for byte in b"big.bin\r\n":
        protocol.dataReceived(bytes([byte]))
    pump(transport)
    assert transport.value() == (root / "big.bin").read_bytes()
    assert transport.disconnecting


def test_bare_name_is_complete_after_a_quiet_period(root):
    """A tutorial client sends the bare name and waits: the server answers after 0.5 s."""
    clock = task.Clock()
    protocol, transport = start(root, clock)
    protocol.dataReceived(b"notes")
    clock.advance(0.4)
    protocol.dataReceived(b".txt")
    clock.advance(0.4)
    assert transport.value() == b""
    clock.advance(0.1)
    pump(transport)
    assert transport.value() == b"hello\n"


def test_half_close_ends_the_name(root):
    """A client that half-closes after the name is answered without waiting."""
    protocol, transport = start(root, task.Clock())
    protocol.dataReceived(b"notes.txt")
    protocol.readConnectionLost()
    pump(transport)
    assert transport.value() == b"hello\n"


@pytest.mark.parametrize(
    "name", [b"missing", b"../etc/passwd", b"escape", b"fifo", b"", b"\xff\xfe", b"x" * 5000]
)
def test_anything_not_servable_is_a_lone_1(root, name):
    """Missing, outside, special, undecodable or oversized names all get the byte 1."""
    clock = task.Clock()
    protocol, transport = start(root, clock)
    protocol.dataReceived(name)
    protocol.readConnectionLost()
    clock.advance(1)
    assert transport.value() == b"1"
    assert transport.disconnecting


def test_silent_client_times_out(root):
    """A client that never sends a name gets '1' after the name timeout."""
    clock = task.Clock()
    protocol, transport = start(root, clock)
    clock.advance(30)
    assert transport.value() == b"1"
