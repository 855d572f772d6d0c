"""Resumable downloads, retried uploads and the reconnecting session, in memory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from twisted.internet import defer, error, task
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files.client import (
    CannotConnect,
    ConnectionClosed,
    FilesClient,
    FilesClientProtocol,
    IntegrityError,
    RemoteError,
)
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.files.transfer import Session, fetch, local_name, part_path, push
from tcpfiles.testing import client_pair, settle
from tcpfiles.tree.hashing import inline
from tcpfiles.tree.paths import Root
from tcpfiles.tree.store import FileStore
from tcpfiles.tree.uploads import Uploads
from tests.helpers import temporary_directory


def pair(root: Path) -> tuple[FilesClient, Any]:
    factory = FileServerFactory(
        FileStore(Root.at(str(root)), inline),
        task.Clock(),
        Limits(chunk_size=256 * 1024),
        Uploads(Root.at(str(root)), 1 << 30, inline),
    )
    return client_pair(factory)


class FetchAndPushTests(SynchronousTestCase):
    """fetch and push against a server of one 3 MiB file."""

    def setUp(self) -> None:
        self.tmp = temporary_directory(self)
        self.root = self.tmp / "files"
        self.root.mkdir()
        self.data = os.urandom(3 << 20)
        (self.root / "big.bin").write_bytes(self.data)

    def test_fetch_resumes_from_a_part_of_the_same_version(self) -> None:
        """A part file for this sha256 is continued with RESUME; only the rest is sent."""
        data = self.data
        destination = str(self.tmp / "big.bin")
        sha = hashlib.sha256(data).hexdigest()
        with open(part_path(destination, sha), "wb") as part:
            part.write(data[:1000000])
        client, pump = pair(self.root)
        with capturedLogs() as events:
            result = settle(fetch(client, "big.bin", destination), pump)
        self.assertEqual(result.resumed_from, 1000000)
        with open(destination, "rb") as done:
            self.assertEqual(done.read(), data)
        self.assertTrue(any(e.get("request") == "RESUME 1000000 big.bin" for e in events))
        self.assertFalse(list(self.tmp.glob("*.part")))

    def test_part_of_another_version_is_discarded(self) -> None:
        """A part for an older version of the file is removed and the download starts over."""
        destination = str(self.tmp / "big.bin")
        stale = part_path(destination, "0" * 64)
        with open(stale, "wb") as part:
            part.write(b"old version")
        client, pump = pair(self.root)
        result = settle(fetch(client, "big.bin", destination), pump)
        self.assertTrue(result.resumed_from == 0 and not os.path.exists(stale))
        with open(destination, "rb") as done:
            self.assertEqual(done.read(), self.data)

    def test_a_corrupt_part_fails_the_check_and_is_removed(self) -> None:
        """Bytes in the part that are not the file's: the sha256 check fails; nothing is kept."""
        destination = str(self.tmp / "big.bin")
        part = part_path(destination, hashlib.sha256(self.data).hexdigest())
        with open(part, "wb") as out:
            out.write(b"X" * 1000)
        client, pump = pair(self.root)
        self.assertTrue(settle(fetch(client, "big.bin", destination), pump).check(IntegrityError))
        self.assertTrue(not os.path.exists(part) and not os.path.exists(destination))

    def test_push_and_a_retry_that_finds_its_own_file(self) -> None:
        """put uploads; a retried PUT that finds a file with its own sha256 counts as done."""
        root = self.root
        local = self.tmp / "up.bin"
        local.write_bytes(b"payload" * 1000)
        sha = hashlib.sha256(local.read_bytes()).hexdigest()
        client, pump = pair(root)
        self.assertEqual(settle(push(client, str(local), "up.bin", 7000, sha), pump), sha)
        self.assertEqual((root / "up.bin").read_bytes(), local.read_bytes())
        again = push(client, str(local), "up.bin", 7000, sha, retried=True)
        self.assertEqual(settle(again, pump), sha)
        failure = settle(push(client, str(local), "up.bin", 7000, sha), pump)
        self.assertTrue(failure.check(RemoteError) and failure.value.code == "exists")


class LostConnectionTests(SynchronousTestCase):
    """A download cut off half way."""

    def test_a_lost_connection_keeps_the_part(self) -> None:
        """What arrived before the connection dropped stays in the part, for the next attempt."""
        protocol = FilesClientProtocol()
        protocol.makeConnection(StringTransport())
        client = FilesClient(protocol)
        body = b"0123456789"
        sha = hashlib.sha256(body).hexdigest()
        destination = os.path.join(temporary_directory(self), "f.bin")
        d = fetch(client, "f.bin", destination)
        protocol.dataReceived(f"OK type=file size=10 mtime=x sha256={sha}\n".encode())
        protocol.dataReceived(b"OK 10\n01234")
        protocol.connectionLost(Failure(ConnectionClosed("cut")))
        failures: list[Failure] = []
        d.addErrback(failures.append)
        self.assertTrue(failures and failures[0].check(ConnectionClosed))
        with open(part_path(destination, sha), "rb") as part:
            self.assertEqual(part.read(), b"01234")


class FakeClient:
    """Stands for a FilesClient whose connection may be closed."""

    def __init__(self) -> None:
        self.protocol = type("P", (), {"closed": False})()

    def close(self) -> None:
        self.protocol.closed = True


class SessionTests(SynchronousTestCase):
    """Retries on new connections, with backoff, within --retry-for."""

    def test_session_retries_with_backoff_then_succeeds(self) -> None:
        """Lost connections are retried on new connections after the policy's delays."""
        clock = task.Clock()
        notices: list[str] = []
        connections: list[FakeClient] = []

        def connector() -> defer.Deferred[Any]:
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
        outcomes: list[Any] = [
            ConnectionClosed("cut"),
            RemoteError("busy", "another upload"),
            "done",
        ]
        calls: list[bool] = []

        def operation(client: Any, retried: bool) -> defer.Deferred[Any]:
            calls.append(retried)
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                return defer.fail(outcome)
            return defer.succeed(outcome)

        d = session.run(operation)
        self.assertTrue(not d.called and notices[-1] == "cut; retrying in 2.0 s")
        clock.advance(2)
        self.assertTrue(notices[-1].startswith("server busy (another upload); retrying in 4.0 s"))
        clock.advance(4)
        self.assertTrue(
            d.result == "done" and calls == [False, True, True] and len(connections) == 3
        )

    def test_session_gives_up_after_retry_for(self) -> None:
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
        failures: list[Failure] = []
        d.addErrback(failures.append)
        self.assertTrue(failures and failures[0].check(ConnectionClosed))

    def test_session_does_not_retry_a_first_connect_or_a_refusal(self) -> None:
        """A server that never answered, or a real refusal, fails at once."""
        clock = task.Clock()
        never = Session(clock, "srv", connector=lambda: defer.fail(ConnectionRefusedError()))
        failures: list[Failure] = []
        never.run(lambda client, retried: defer.succeed(None)).addErrback(failures.append)
        self.assertTrue(failures)
        session = Session(clock, "srv", connector=lambda: defer.succeed(FakeClient()))
        refused = session.run(lambda c, r: defer.fail(RemoteError("not-found", "x")))
        refused.addErrback(failures.append)
        self.assertTrue(failures[-1].check(RemoteError) and not clock.getDelayedCalls())


class LocalNameTests(SynchronousTestCase):
    """A hostile server cannot make get -r write outside DEST or name files with escapes."""

    def test_local_name_plain(self) -> None:
        """An ordinary name is itself."""
        self.assertEqual(local_name(b"ok.txt"), "ok.txt")

    def test_local_name_dot_dot(self) -> None:
        """``..`` is refused."""
        self.assertIsNone(local_name(b".."))

    def test_local_name_dot(self) -> None:
        """``.`` is refused."""
        self.assertIsNone(local_name(b"."))

    def test_local_name_slash(self) -> None:
        """A slash is refused."""
        self.assertIsNone(local_name(b"a/b"))

    def test_local_name_nul(self) -> None:
        """NUL is refused."""
        self.assertIsNone(local_name(b"nul\0"))

    def test_local_name_not_utf8(self) -> None:
        """A byte that is not UTF-8 is refused."""
        self.assertIsNone(local_name(b"\xff"))

    def test_local_name_escape(self) -> None:
        """A terminal escape is refused."""
        self.assertIsNone(local_name(b"esc\x1b"))

    def test_local_name_accented(self) -> None:
        """A name in UTF-8 is itself."""
        self.assertEqual(local_name("caf\u00e9".encode()), "caf\u00e9")


class RetryConnectTests(SynchronousTestCase):
    """A connection that cannot be made again, after the first, is retried like a lost one."""

    def test_cannot_connect_is_retried_after_the_first_connection(self) -> None:
        """First connect works; the next one is refused once, then works: the notice says so."""
        clock = task.Clock()
        notices: list[str] = []
        attempts: list[defer.Deferred[Any]] = [
            defer.succeed(FakeClient()),
            defer.fail(CannotConnect(error.ConnectionRefusedError())),
            defer.succeed(FakeClient()),
        ]
        session = Session(
            clock,
            "srv",
            on_notice=notices.append,
            policy=lambda n: 1.0,
            connector=lambda: attempts.pop(0),
        )
        outcomes: list[Any] = [ConnectionClosed("cut"), "done"]

        def operation(client: Any, retried: bool) -> defer.Deferred[Any]:
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                return defer.fail(outcome)
            return defer.succeed(outcome)

        d = session.run(operation)
        clock.advance(1)
        refused = "server not reachable (connection refused); retrying in 1.0 s"
        self.assertEqual(notices[-1], refused)
        clock.advance(1)
        self.assertEqual(self.successResultOf(d), "done")


class FetchProgressTests(SynchronousTestCase):
    """fetch tells the size (and what a part already holds), then each piece's bytes."""

    def test_on_start_and_on_received(self) -> None:
        """on_start(total, already) once; on_received deltas that add up to the rest."""
        root = temporary_directory(self) / "files"
        root.mkdir()
        data = os.urandom(1 << 20)
        (root / "f.bin").write_bytes(data)
        destination = str(root.parent / "f.bin")
        with open(part_path(destination, hashlib.sha256(data).hexdigest()), "wb") as part:
            part.write(data[:1000])
        starts: list[tuple[int, int]] = []
        received: list[int] = []
        client, pump = pair(root)
        fetched = fetch(
            client,
            "f.bin",
            destination,
            on_start=lambda total, already: starts.append((total, already)),
            on_received=received.append,
        )
        self.assertEqual(settle(fetched, pump).resumed_from, 1000)
        self.assertEqual((starts, sum(received)), ([(len(data), 1000)], len(data) - 1000))

    def test_both_names_at_once_are_refused(self) -> None:
        """on_received and on_progress together: a TypeError at the call."""
        client = FilesClient(FilesClientProtocol())
        self.assertRaises(TypeError, fetch, client, "a", "b", on_progress=print, on_received=print)

    def test_a_directory_is_not_fetched(self) -> None:
        """STAT says dir: RemoteError not-a-file, nothing written."""
        root = temporary_directory(self) / "files"
        (root / "d").mkdir(parents=True)
        client, pump = pair(root)
        failure = settle(fetch(client, "d", str(root.parent / "d")), pump)
        self.assertTrue(failure.check(RemoteError) and failure.value.code == "not-a-file")
        self.assertFalse((root.parent / "d").exists())


class LocalNameOfStrTests(SynchronousTestCase):
    """local_name takes a RemoteEntry's name (a str) as well as its bytes."""

    def test_str_names(self) -> None:
        """A str name is judged by its bytes: a surrogate (not UTF-8) is refused."""
        self.assertEqual(local_name("caf\u00e9"), "caf\u00e9")
        self.assertIsNone(local_name("bad\udcff"))
        self.assertIsNone(local_name(".."))
