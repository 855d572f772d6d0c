"""Out of descriptors: every request that opens one answers ``ERR busy`` and keeps the connection.

``os.open``/``os.dup``/``os.scandir`` are replaced by functions failing with EMFILE (as a process at
its ``RLIMIT_NOFILE`` sees); the same request succeeds on the same connection once they work.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from twisted.internet import defer, task
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files.client import RemoteError
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.files.transfer import Session
from tcpfiles.oneshot.plugin import OneShotOptions
from tcpfiles.oneshot.protocol import OneShotFactory
from tcpfiles.testing import connect, respond
from tcpfiles.tree.hashing import inline
from tcpfiles.tree.paths import Root
from tcpfiles.tree.store import FileStore
from tcpfiles.tree.uploads import Uploads

REAL = {name: getattr(os, name) for name in ("open", "dup", "scandir", "mkdir")}


def failing(code: int = errno.EMFILE):
    """Stands for an ``os`` call in a process that has run out of descriptors."""

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


def put_line(path: str, body: bytes) -> bytes:
    return f"PUT {len(body)} {hashlib.sha256(body).hexdigest()} {path}\n".encode()


class ExhaustedServerTests(SynchronousTestCase):
    """The files server under EMFILE: busy, never not-found or internal, never a traceback."""

    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.dir)
        (self.dir / "sub").mkdir()
        (self.dir / "a.txt").write_bytes(b"alpha\n")
        root = Root.at(str(self.dir))
        self.factory = FileServerFactory(
            FileStore(root, inline), task.Clock(), Limits(), Uploads(root, 1 << 20, inline)
        )
        self.root = root

    def exhaust(self, *names: str, code: int = errno.EMFILE) -> None:
        for name in names:
            self.patch(os, name, failing(code))

    def recover(self) -> None:
        for name, real in REAL.items():
            self.patch(os, name, real)

    def ask(self, request: bytes, byte_by_byte: bool = False) -> tuple[bytes, list]:
        with capturedLogs() as events:
            out = respond(self.protocol, self.transport, request, byte_by_byte)
        return out, events

    def assert_busy(self, out: bytes, events: list) -> None:
        self.assertTrue(out.startswith(b"ERR busy "), out)
        self.assertEqual(out.count(b"\n"), 1, out)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual([e for e in events if "log_failure" in e], [])

    def test_reads_are_busy_then_served(self) -> None:
        """GET, RESUME, STAT and LIST: busy while exhausted (whole or byte by byte), then served."""
        self.root.fd()
        self.protocol, self.transport = connect(self.factory)
        requests = {
            b"GET a.txt\n": b"OK 6\nalpha\n",
            b"RESUME 2 a.txt\n": b"OK 4\npha\n",
            b"STAT a.txt\n": b"OK type=file size=6 ",
            b"LIST sub\n": b"OK list\nEND 0\n",
            b"LIST\n": b"OK list\n",
        }
        for byte_by_byte in (False, True):
            for request, good in requests.items():
                self.exhaust("open", "dup", "scandir")
                self.assert_busy(*self.ask(request, byte_by_byte))
                self.recover()
                out, _ = self.ask(request, byte_by_byte)
                self.assertTrue(out.startswith(good), (request, out))

    def test_errno_kinds(self) -> None:
        """ENFILE (system table full) and ENOMEM are busy as EMFILE is."""
        self.root.fd()
        self.protocol, self.transport = connect(self.factory)
        for code in (errno.ENFILE, errno.ENOMEM):
            self.exhaust("open", code=code)
            out, events = self.ask(b"GET a.txt\n")
            self.assert_busy(out, events)

    def test_fresh_server(self) -> None:
        """The first request of a server whose root descriptor is not open yet: busy, not
        internal with a traceback (what the audit saw)."""
        self.protocol, self.transport = connect(self.factory)
        self.exhaust("open")
        self.assert_busy(*self.ask(b"GET a.txt\n"))
        self.recover()
        self.assertEqual(self.ask(b"GET a.txt\n")[0], b"OK 6\nalpha\n")

    def test_writes_are_busy(self) -> None:
        """PUT's temporary and MKDIR's parent: busy, nothing left behind, then both work."""
        self.root.fd()
        self.protocol, self.transport = connect(self.factory)
        body = b"x" * 100
        self.exhaust("open")
        self.assert_busy(*self.ask(put_line("sub/new.bin", body)))
        self.assert_busy(*self.ask(b"MKDIR sub/d\n"))
        self.assertEqual(os.listdir(self.dir / "sub"), [])
        self.recover()
        self.exhaust("mkdir", code=errno.ENOMEM)  # past the parent: the server's own safety net
        self.assert_busy(*self.ask(b"MKDIR d\n"))
        self.recover()
        out, _ = self.ask(put_line("sub/new.bin", body) + body)
        self.assertTrue(out.startswith(b"OK send 100\nOK stored 100 "), out)
        self.assertEqual(self.ask(b"MKDIR sub/d\n")[0], b"OK created\n")


class OneShotExhaustedTests(SynchronousTestCase):
    """oneshot has one refusal (``1``): out of descriptors it answers that, with no traceback."""

    def test_refused_cleanly(self) -> None:
        """EMFILE opening the file: ``1``, the connection closed, the reason logged."""
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        (directory / "a.txt").write_bytes(b"alpha")
        options = OneShotOptions()
        options.parseOptions([])
        factory = OneShotFactory(FileStore(Root.at(str(directory))), task.Clock(), options)
        protocol, transport = connect(factory)
        self.patch(os, "open", failing())
        with capturedLogs() as events:
            protocol.dataReceived(b"a.txt\n")
        self.assertEqual(transport.value(), b"1")
        self.assertTrue(transport.disconnecting)
        self.assertEqual([e for e in events if "log_failure" in e], [])
        self.assertTrue(
            any(
                "busy" in str(e.get("outcome", ""))
                or "out of resources" in str(e.get("outcome", ""))
                for e in events
            ),
            events,
        )


class FakeClient:
    """A FilesClient stand-in that records whether it was closed."""

    def __init__(self, login_error: Exception | None = None) -> None:
        self.protocol = type("P", (), {"closed": False})()
        self.login_error = login_error

    def login(self, user: str, password: str) -> defer.Deferred[None]:
        return defer.fail(self.login_error) if self.login_error else defer.succeed(None)

    def close(self) -> None:
        self.protocol.closed = True


class SessionBusyTests(SynchronousTestCase):
    """The client retries ``busy`` without leaving connections open behind it."""

    def test_busy_is_retried_and_the_old_connection_closed(self) -> None:
        """A busy answer is retried after the backoff; the connection it came on is closed."""
        clock = task.Clock()
        connections: list[FakeClient] = []

        def connector():
            connections.append(FakeClient())
            return defer.succeed(connections[-1])

        session = Session(clock, "srv", policy=lambda n: 1.0, connector=connector)
        outcomes = [RemoteError("busy", "out of resources"), "served"]
        d = session.run(
            lambda client, retried: (
                defer.fail(outcomes.pop(0)) if len(outcomes) == 2 else defer.succeed(outcomes.pop())
            )
        )
        self.assertNoResult(d)
        self.assertTrue(connections[0].protocol.closed)
        clock.advance(1)
        self.assertEqual(self.successResultOf(d), "served")
        self.assertFalse(connections[1].protocol.closed)

    def test_refused_login_closes_its_connection(self) -> None:
        """A login answered with an error does not leave its connection open."""
        made: list[FakeClient] = []

        def connector():
            made.append(FakeClient(RemoteError("busy", "too many failed logins")))
            return defer.succeed(made[-1])

        session = Session(task.Clock(), "srv", connector=connector, credentials=("u", "p"))
        self.failureResultOf(session.client(), RemoteError)
        self.assertTrue(made[0].protocol.closed)
