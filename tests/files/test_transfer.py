"""Resumable downloads, retried uploads and the reconnecting session, in memory."""

from __future__ import annotations

import hashlib
import os

import pytest
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from tcpfiles.files.client import (
    ConnectionClosed,
    FilesClient,
    FilesClientProtocol,
    IntegrityError,
    RemoteError,
)
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.files.transfer import Session, fetch, local_name, part_path, push
from tcpfiles.tree.paths import Root
from tcpfiles.tree.store import FileStore
from tcpfiles.tree.uploads import Uploads
from tests.files.helpers import client_pair, settle


def inline(f, *args):
    return defer.maybeDeferred(f, *args)


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    data = os.urandom(3 << 20)
    (root / "big.bin").write_bytes(data)
    return root, data


def pair(root):
    factory = FileServerFactory(
        FileStore(Root.at(str(root)), inline),
        task.Clock(),
        Limits(chunk_size=256 * 1024),
        Uploads(Root.at(str(root)), 1 << 30, inline),
    )
    return client_pair(factory)


def test_fetch_resumes_from_a_part_of_the_same_version(served, tmp_path):
    """A part file for this sha256 is continued with RESUME; only the rest is sent."""
    root, data = served
    destination = str(tmp_path / "big.bin")
    sha = hashlib.sha256(data).hexdigest()
    with open(part_path(destination, sha), "wb") as part:
        part.write(data[:1000000])
    client, pump = pair(root)
    with capturedLogs() as events:
        result = settle(fetch(client, "big.bin", destination), pump)
    assert result.resumed_from == 1000000
    assert open(destination, "rb").read() == data
    assert any(e.get("request") == "RESUME 1000000 big.bin" for e in events)
    assert not list(tmp_path.glob("*.part"))


def test_part_of_another_version_is_discarded(served, tmp_path):
    """A part for an older version of the file is removed and the download starts over."""
    root, data = served
    destination = str(tmp_path / "big.bin")
    stale = part_path(destination, "0" * 64)
    with open(stale, "wb") as part:
        part.write(b"old version")
    client, pump = pair(root)
    result = settle(fetch(client, "big.bin", destination), pump)
    assert result.resumed_from == 0 and not os.path.exists(stale)
    assert open(destination, "rb").read() == data


def test_a_corrupt_part_fails_the_check_and_is_removed(served, tmp_path):
    """Bytes in the part that are not the file's: the sha256 check fails; nothing is kept."""
    root, data = served
    destination = str(tmp_path / "big.bin")
    part = part_path(destination, hashlib.sha256(data).hexdigest())
    with open(part, "wb") as out:
        out.write(b"X" * 1000)
    client, pump = pair(root)
    assert settle(fetch(client, "big.bin", destination), pump).check(IntegrityError)
    assert not os.path.exists(part) and not os.path.exists(destination)


def test_a_lost_connection_keeps_the_part():
    """What arrived before the connection dropped stays in the part, for the next attempt."""
    protocol = FilesClientProtocol()
    protocol.makeConnection(StringTransport())
    client = FilesClient(protocol)
    body = b"0123456789"
    sha = hashlib.sha256(body).hexdigest()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        destination = os.path.join(tmp, "f.bin")
        d = fetch(client, "f.bin", destination)
        protocol.dataReceived(f"OK type=file size=10 mtime=x sha256={sha}\n".encode())
        protocol.dataReceived(b"OK 10\n01234")
        protocol.connectionLost(Failure(ConnectionClosed("cut")))
        failures = []
        d.addErrback(failures.append)
        assert failures and failures[0].check(ConnectionClosed)
        assert open(part_path(destination, sha), "rb").read() == b"01234"


def test_push_and_a_retry_that_finds_its_own_file(served, tmp_path):
    """put uploads; a retried PUT that finds a file with its own sha256 counts as done."""
    root, _ = served
    local = tmp_path / "up.bin"
    local.write_bytes(b"payload" * 1000)
    sha = hashlib.sha256(local.read_bytes()).hexdigest()
    client, pump = pair(root)
    assert settle(push(client, str(local), "up.bin", 7000, sha), pump) == sha
    assert (root / "up.bin").read_bytes() == local.read_bytes()
    assert settle(push(client, str(local), "up.bin", 7000, sha, retried=True), pump) == sha
    failure = settle(push(client, str(local), "up.bin", 7000, sha), pump)
    assert failure.check(RemoteError) and failure.value.code == "exists"


class FakeClient:
    """Stands for a FilesClient whose connection may be closed."""

    def __init__(self) -> None:
        self.protocol = type("P", (), {"closed": False})()

    def close(self) -> None:
        self.protocol.closed = True


def test_session_retries_with_backoff_then_succeeds():
    """Lost connections are retried on new connections after the policy's delays."""
    clock = task.Clock()
    notices: list[str] = []
    connections = []

    def connector():
        connections.append(FakeClient())
        return defer.succeed(connections[-1])

    session = Session(
        clock,
        "srv",
        retry_for=60,
        on_notice=notices.append,
        policy=lambda n: 2.0 * n,
        connector=connector,
    )
    outcomes = [ConnectionClosed("cut"), RemoteError("busy", "another upload"), "done"]
    calls = []

    def operation(client, retried):
        calls.append(retried)
        outcome = outcomes.pop(0)
        return defer.fail(outcome) if isinstance(outcome, Exception) else defer.succeed(outcome)

    d = session.run(operation)
    assert not d.called and notices[-1] == "cut; retrying in 2.0 s"
    clock.advance(2)
    assert notices[-1].startswith("server busy (another upload); retrying in 4.0 s")
    clock.advance(4)
    assert d.result == "done" and calls == [False, True, True] and len(connections) == 3


def test_session_gives_up_after_retry_for():
    """Past --retry-for the last failure is raised."""
    clock = task.Clock()
    session = Session(
        clock,
        "srv",
        retry_for=5,
        policy=lambda n: 3.0,
        connector=lambda: defer.succeed(FakeClient()),
    )
    d = session.run(lambda client, retried: defer.fail(ConnectionClosed("gone")))
    clock.advance(3)
    failures = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(ConnectionClosed)


def test_session_does_not_retry_a_first_connect_or_a_refusal():
    """A server that never answered, or a real refusal, fails at once."""
    clock = task.Clock()
    never = Session(clock, "srv", connector=lambda: defer.fail(ConnectionRefusedError()))
    failures = []
    never.run(lambda client, retried: defer.succeed(None)).addErrback(failures.append)
    assert failures
    session = Session(clock, "srv", connector=lambda: defer.succeed(FakeClient()))
    refused = session.run(lambda c, r: defer.fail(RemoteError("not-found", "x")))
    refused.addErrback(failures.append)
    assert failures[-1].check(RemoteError) and not clock.getDelayedCalls()


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"ok.txt", "ok.txt"),
        (b"..", None),
        (b".", None),
        (b"a/b", None),
        (b"nul\0", None),
        (b"\xff", None),
        (b"esc\x1b", None),
        ("caf\u00e9".encode(), "caf\u00e9"),
    ],
)
def test_local_name(raw, name):
    """A hostile server cannot make get -r write outside DEST or name files with escapes."""
    assert local_name(raw) == name
