"""put's sources (a path, a file object, a descriptor), their sha256 (off the reactor thread for
big ones), progress, and an upload that keeps pipelining safe: in memory (iosim)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, interfaces, task
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tcpfiles.files.client import (
    ConnectionClosed,
    FilesClient,
    FilesClientProtocol,
    RemoteError,
)
from tcpfiles.files.client_source import INLINE_HASH_LIMIT, digest_of, open_source
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.files.transfer import push
from tcpfiles.testing import client_pair, settle
from tcpfiles.tree.hashing import inline
from tcpfiles.tree.paths import Root
from tcpfiles.tree.producer import FileShrank
from tcpfiles.tree.store import FileStore
from tcpfiles.tree.uploads import Uploads
from tests.helpers import temporary_directory


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class WritableServer(SynchronousTestCase):
    """A client connected in memory to a writable server of an empty root."""

    def setUp(self) -> None:
        self.tmp = temporary_directory(self)
        self.root = self.tmp / "files"
        self.root.mkdir()
        factory = FileServerFactory(
            FileStore(Root.at(str(self.root)), inline),
            task.Clock(),
            Limits(chunk_size=64 * 1024),
            Uploads(Root.at(str(self.root)), 1 << 30, inline),
        )
        self.client, self.pump = client_pair(factory)

    def local(self, data: bytes, name: str = "local.bin") -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path


class PutSourceTests(WritableServer):
    """Whatever the source, the server gets its bytes, checked against a sha256 we computed."""

    def test_put_a_path_computes_size_and_sha256(self) -> None:
        """put(path, "local") sends the whole file; fires with its sha256."""
        data = os.urandom(300_000)
        stored = settle(self.client.put("up.bin", str(self.local(data))), self.pump)
        self.assertEqual(stored, sha(data))
        self.assertEqual((self.root / "up.bin").read_bytes(), data)

    def test_put_a_pathlike(self) -> None:
        """An os.PathLike is a path too."""
        stored = settle(self.client.put("p.bin", self.local(b"pathlike")), self.pump)
        self.assertEqual(stored, sha(b"pathlike"))

    def test_put_a_file_object_from_its_position(self) -> None:
        """A file opened 'rb' is sent from where it stands to its end."""
        with open(self.local(b"HEADERbody"), "rb") as source:
            source.read(6)
            stored = settle(self.client.put("f.bin", source), self.pump)
        self.assertEqual(stored, sha(b"body"))
        self.assertEqual((self.root / "f.bin").read_bytes(), b"body")

    def test_put_a_file_object_without_a_descriptor(self) -> None:
        """io.BytesIO has no descriptor: it is read, a piece at a time."""
        data = os.urandom(3 << 20)
        stored = settle(self.client.put("mem.bin", io.BytesIO(data)), self.pump)
        self.assertEqual(stored, sha(data))
        self.assertEqual((self.root / "mem.bin").read_bytes(), data)

    def test_put_a_descriptor_with_size_and_sha256_given(self) -> None:
        """The old form: a descriptor, its size and sha256, sent from offset 0."""
        data = b"descriptor" * 100
        fd = os.open(self.local(data), os.O_RDONLY)
        self.addCleanup(os.close, fd)
        os.lseek(fd, 500, os.SEEK_SET)  # ignored: a descriptor is read from 0
        stored = settle(self.client.put("d.bin", fd, len(data), sha(data)), self.pump)
        self.assertEqual(stored, sha(data))
        self.assertEqual((self.root / "d.bin").read_bytes(), data)

    def test_put_an_empty_file(self) -> None:
        """Zero bytes: no body, still stored and checked."""
        stored = settle(self.client.put("empty", str(self.local(b""))), self.pump)
        self.assertEqual(stored, sha(b""))
        self.assertEqual((self.root / "empty").read_bytes(), b"")

    def test_a_text_file_object_is_refused(self) -> None:
        """A file opened 'r' would send str: a TypeError, before anything is sent."""
        with open(self.local(b"text"), encoding="utf-8") as text:
            failure = settle(self.client.put("t.txt", text), self.pump)  # type: ignore[arg-type]
        self.assertTrue(failure.check(TypeError))
        self.assertFalse((self.root / "t.txt").exists())

    def test_a_missing_local_file_is_an_oserror(self) -> None:
        """A path that does not exist fails with FileNotFoundError naming it."""
        failure = settle(self.client.put("x", str(self.tmp / "missing")), self.pump)
        self.assertTrue(failure.check(FileNotFoundError))
        self.assertEqual(failure.value.filename, str(self.tmp / "missing"))

    def test_a_directory_is_not_uploaded(self) -> None:
        """A directory as the source is an OSError, not an empty upload."""
        failure = settle(self.client.put("x", str(self.tmp)), self.pump)
        self.assertTrue(failure.check(OSError))
        self.assertFalse((self.root / "x").exists())


class ProgressTests(WritableServer):
    """on_sent (and its older name on_progress) get the bytes of each piece: deltas."""

    def test_on_sent_deltas_add_up_to_the_size(self) -> None:
        """Each call is one piece; the sum is the file's size."""
        data = os.urandom(3 << 20)
        pieces: list[int] = []
        put = self.client.put("p.bin", io.BytesIO(data), on_sent=pieces.append)
        settle(put, self.pump)
        self.assertGreater(len(pieces), 1)
        self.assertEqual(sum(pieces), len(data))

    def test_on_progress_still_works(self) -> None:
        """The older keyword, positionally as before, passes the same deltas."""
        data = b"z" * 200_000
        pieces: list[int] = []
        put = self.client.put("q.bin", io.BytesIO(data), None, None, False, pieces.append)
        settle(put, self.pump)
        self.assertEqual(sum(pieces), len(data))

    def test_both_names_at_once_are_refused(self) -> None:
        """on_sent and on_progress together: a TypeError at the call."""
        self.assertRaises(
            TypeError,
            self.client.put,
            "r",
            io.BytesIO(b"r"),
            on_progress=print,
            on_sent=print,
        )

    def test_push_computes_and_reports_the_start(self) -> None:
        """push without a size or sha256 computes them, then says (total, 0) before the body."""
        data = os.urandom(100_000)
        starts: list[tuple[int, int]] = []
        sent: list[int] = []
        pushed = push(
            self.client,
            str(self.local(data)),
            "pushed.bin",
            on_start=lambda total, already: starts.append((total, already)),
            on_sent=sent.append,
        )
        self.assertEqual(settle(pushed, self.pump), sha(data))
        self.assertEqual((starts, sum(sent)), ([(len(data), 0)], len(data)))


class PipelinedUploadTests(WritableServer):
    """Requests issued while an upload is in flight wait for its body, then go out in order."""

    def test_requests_after_a_put_are_answered_after_it(self) -> None:
        """put, then at once list and stat: the body is not mixed with their lines."""
        data = os.urandom(500_000)
        put = self.client.put("new.bin", io.BytesIO(data))
        listed = self.client.list()
        stat = self.client.stat("new.bin")
        self.assertEqual(settle(put, self.pump), sha(data))
        self.assertEqual([e.name for e in settle(listed, self.pump)], ["new.bin"])
        self.assertEqual(settle(stat, self.pump).sha256, sha(data))

    def test_requests_after_a_refused_put_go_out(self) -> None:
        """A PUT refused (exists): what waited behind it is sent and answered."""
        (self.root / "there").write_bytes(b"old")
        put = self.client.put("there", io.BytesIO(b"new"))
        stat = self.client.stat("there")
        failure = settle(put, self.pump)
        self.assertTrue(failure.check(RemoteError) and failure.value.code == "exists")
        self.assertEqual(settle(stat, self.pump).size, 3)

    def test_two_puts_in_a_row(self) -> None:
        """A second upload issued during the first waits, and both land."""
        first = self.client.put("one", io.BytesIO(b"1" * 300_000))
        second = self.client.put("two", io.BytesIO(b"2" * 300_000))
        self.assertEqual(settle(first, self.pump), sha(b"1" * 300_000))
        self.assertEqual(settle(second, self.pump), sha(b"2" * 300_000))
        self.assertEqual((self.root / "two").read_bytes(), b"2" * 300_000)


class BodyFailureTests(SynchronousTestCase):
    """A body that cannot be sent fails the upload with its own error and drops the line."""

    def test_a_file_that_shrank_fails_the_put(self) -> None:
        """The size was announced; the file is shorter now: FileShrank, connection aborted."""
        protocol = FilesClientProtocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        client = FilesClient(protocol)
        fd = os.open(os.devnull, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        put = client.put("x", fd, 10, "0" * 64)
        later = client.stat("x")
        self.assertEqual(transport.value(), b"PUT 10 " + b"0" * 64 + b" x\n")
        protocol.dataReceived(b"OK send 10\n")
        transport.producer.resumeProducing()  # StringTransport does not pull by itself
        failures: list[Failure] = []
        put.addErrback(failures.append)
        self.assertTrue(failures and failures[0].check(FileShrank))
        self.assertTrue(transport.disconnecting)
        self.assertNotIn(b"STAT", transport.value())  # never sent where the body was due
        protocol.connectionLost(Failure(ConnectionClosed("aborted")))
        self.assertIsInstance(self.failureResultOf(later).value, ConnectionClosed)


@implementer(interfaces.IReactorThreads)
class ThreadsOnDemand:
    """A reactor whose thread pool runs a job only when told (``run()``), on this thread."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], None]] = []
        self.triggers: dict[int, Callable[[], None]] = {}

    def getThreadPool(self) -> ThreadsOnDemand:
        return self

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], f: Callable[..., Any], *args: Any
    ) -> None:
        def job() -> None:
            try:
                on_result(True, f(*args))
            except BaseException as exc:  # noqa: BLE001 - what a thread pool hands over
                on_result(False, Failure(exc))

        self.jobs.append(job)

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        f(*args)

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[[], None]) -> int:
        self.triggers[len(self.triggers) + 1] = f
        return len(self.triggers)

    def removeSystemEventTrigger(self, trigger: int) -> None:
        del self.triggers[trigger]

    def run(self) -> None:
        self.jobs.pop(0)()


class DigestTests(SynchronousTestCase):
    """digest_of: small sources at once, big ones in the thread pool, stoppable."""

    def test_small_is_hashed_at_once(self) -> None:
        """Up to INLINE_HASH_LIMIT bytes: no thread."""
        reactor = ThreadsOnDemand()
        digest = digest_of(io.BytesIO(b"small"), reactor)
        self.assertEqual(self.successResultOf(digest), (5, sha(b"small")))
        self.assertEqual(reactor.jobs, [])

    def test_big_is_hashed_in_the_thread_pool(self) -> None:
        """Past the limit the hash is a job for the pool; the shutdown trigger goes after."""
        reactor = ThreadsOnDemand()
        data = b"b" * (INLINE_HASH_LIMIT + 1)
        digest = digest_of(io.BytesIO(data), reactor)
        self.assertNoResult(digest)
        self.assertEqual(len(reactor.triggers), 1)
        reactor.run()
        self.assertEqual(self.successResultOf(digest), (len(data), sha(data)))
        self.assertEqual(reactor.triggers, {})

    def test_cancel_stops_the_hashing(self) -> None:
        """Cancelled before the thread ran: CancelledError, and the thread stops at once."""
        reactor = ThreadsOnDemand()
        source = open_source(io.BytesIO(b"c" * (INLINE_HASH_LIMIT * 8)))
        digest = digest_of(source, reactor)
        digest.cancel()
        self.failureResultOf(digest, defer.CancelledError)
        reactor.run()  # the job sees the stop and ends without reading: nothing more happens
        self.assertEqual(reactor.triggers, {})

    def test_shutdown_stops_the_hashing(self) -> None:
        """The reactor shutting down sets the stop: the hash ends with CancelledError."""
        reactor = ThreadsOnDemand()
        digest = digest_of(io.BytesIO(b"s" * (INLINE_HASH_LIMIT * 2)), reactor)
        for trigger in list(reactor.triggers.values()):
            trigger()
        reactor.run()
        self.failureResultOf(digest, defer.CancelledError)

    def test_a_stream_that_cannot_seek_needs_its_digest_given(self) -> None:
        """A pipe cannot be read twice: hashing it is a ValueError."""
        read_end, write_end = os.pipe()
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            failure = self.failureResultOf(digest_of(open_source(pipe, 0)))
        self.assertIsInstance(failure.value, ValueError)

    def test_a_connection_lost_mid_body_is_connection_closed(self) -> None:
        """The transport stops the body as it closes: the put fails with ConnectionClosed (so a
        Session retries it), not with the producer's TransferStopped."""
        protocol = FilesClientProtocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        put = FilesClient(protocol).put("x", io.BytesIO(b"y" * (3 << 20)))
        protocol.dataReceived(b"OK send 3145728\n")
        transport.producer.resumeProducing()  # one piece out
        transport.producer.stopProducing()  # what a transport does first when it is lost
        self.assertNoResult(put)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsInstance(self.failureResultOf(put).value, ConnectionClosed)
