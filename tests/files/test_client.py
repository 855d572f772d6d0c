"""The client API against the real server protocol, connected in memory (iosim)."""

from __future__ import annotations

import hashlib
import os

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tcpfiles.files.client import (
    ConnectionClosed,
    FilesClient,
    FilesClientProtocol,
    IntegrityError,
    RemoteError,
    client_endpoint,
)
from tcpfiles.files.transfer import fetch
from tcpfiles.files.wire import ProtocolError
from tests.files.helpers import client_pair, make_factory, settle


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "files"
    (root / "d").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha")
    (root / "d" / "big.bin").write_bytes(os.urandom(3 << 20))
    (root / "odd\u202ename").write_bytes(b"?")  # listed escaped, fetched by its real name
    return root


@pytest.fixture
def pair(served):
    return client_pair(make_factory(served, chunk_size=256 * 1024))


def test_pipelined_requests(pair):
    """Several requests issued at once get their own answers, in order."""
    client, pump = pair
    chunks: list[bytes] = []
    d1 = client.get("a.txt", chunks.append)
    d2 = client.list("")
    d3 = client.stat("d/big.bin")
    d4 = client.get("nope", chunks.append)
    assert settle(d1, pump) == 5
    assert b"".join(chunks) == b"alpha"
    entries = settle(d2, pump)
    assert [(e.kind, e.name) for e in entries] == [
        ("f", b"a.txt"),
        ("d", b"d"),
        ("f", "odd\u202ename".encode()),
    ]
    assert entries[2].display_name == "odd\\u202ename"
    info = settle(d3, pump)
    assert (info.kind, info.size) == ("file", 3 << 20)
    failure = settle(d4, pump)
    assert failure.check(RemoteError) and failure.value.code == "not-found"


def test_resume_from_offset(pair, served):
    """get(offset=n) delivers the file from byte n on."""
    client, pump = pair
    chunks: list[bytes] = []
    assert settle(client.get("d/big.bin", chunks.append, offset=1000), pump) == (3 << 20) - 1000
    assert b"".join(chunks) == (served / "d" / "big.bin").read_bytes()[1000:]


def test_fetch_verifies_and_renames(pair, served, tmp_path):
    """fetch writes a .part, checks size and sha256, and renames it into place."""
    client, pump = pair
    destination = tmp_path / "big.bin"
    progress: list[int] = []
    result = settle(fetch(client, "d/big.bin", str(destination), on_progress=progress.append), pump)
    data = (served / "d" / "big.bin").read_bytes()
    assert destination.read_bytes() == data
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert sum(progress) == len(data)
    assert not list(tmp_path.glob("*.part"))


def test_fetch_detects_a_file_changed_between_stat_and_get(pair, served, tmp_path):
    """If the bytes do not match STAT's sha256, nothing is left behind."""
    client, pump = pair
    destination = tmp_path / "a.txt"
    d = fetch(client, "a.txt", str(destination))
    # STAT is answered first; change the file before the GET is served.
    for _ in range(100):
        if client.protocol.pending and client.protocol.pending[0].kind == "bytes":
            break
        pump.pump()
    (served / "a.txt").write_bytes(b"ALPHA")
    failure = settle(d, pump)
    assert failure.check(IntegrityError)
    assert list(tmp_path.glob("a.txt*")) == []


def test_connection_lost_fails_every_pending_request():
    """A dropped connection (even mid-body) fails what was outstanding with ConnectionClosed."""
    protocol = FilesClientProtocol()
    protocol.makeConnection(StringTransport())
    client = FilesClient(protocol)
    got: list[bytes] = []
    d1, d2 = client.get("a", got.append), client.list()
    protocol.dataReceived(b"OK 10\n12345")
    protocol.connectionLost(Failure(ConnectionDone()))
    assert got == [b"12345"]
    for d in (d1, d2, client.stat("late")):
        failures = []
        d.addErrback(failures.append)
        assert failures and failures[0].check(ConnectionClosed)


@pytest.mark.parametrize("reply", [b"HTTP/1.0 200 OK\n", b"OK nonsense\n", b"OK 1\nbad\n"])
def test_garbage_from_server_fails_cleanly(reply):
    """A reply that is not the protocol fails the requests and drops the connection."""
    protocol = FilesClientProtocol()
    transport = StringTransport()
    protocol.makeConnection(transport)
    d = FilesClient(protocol).list()
    protocol.dataReceived(reply)
    failures = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(ConnectionClosed, ProtocolError)
    assert transport.disconnecting or failures[0].check(ProtocolError)


@pytest.mark.parametrize(
    ("server", "kind"),
    [
        ("localhost", "HostnameEndpoint"),
        ("example.org:9", "HostnameEndpoint"),
        ("[::1]:8888", "HostnameEndpoint"),
        ("tcp:host=127.0.0.1:port=1", "TCP4ClientEndpoint"),
        ("unix:/tmp/x.sock", "UNIXClientEndpoint"),
    ],
)
def test_client_endpoint_forms(server, kind):
    """HOST, HOST:PORT, [v6]:PORT and endpoint strings all name a server."""
    from twisted.internet import reactor

    assert type(client_endpoint(reactor, server)).__name__ == kind


@pytest.mark.parametrize("server", ["h:0", "h:70000", "h:port", "[::1]:x"])
def test_client_endpoint_rejects_bad_ports(server):
    """A bad port is a ValueError, for a clear usage message."""
    from twisted.internet import reactor

    with pytest.raises(ValueError):
        client_endpoint(reactor, server)
