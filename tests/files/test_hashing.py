"""Hashing: keyed by file identity, bounded, chunked, fsync never behind it, abandoned at stop."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files.factory import make_files_factory
from tcpfiles.files.server import FileServerFactory
from tcpfiles.testing import connect, pump
from tcpfiles.tree import hashing as hashing_module
from tcpfiles.tree.hashing import HashBusy, Hasher, HashLimits, hash_some, make_hasher
from tcpfiles.tree.paths import FileChanging, Root
from tcpfiles.tree.store import FileStore

MIB = 1 << 20


class FakeThreads:
    """A thread runner that holds every job until the test runs it, in order."""

    def __init__(self) -> None:
        self.queue: list[tuple[defer.Deferred[Any], Any, tuple[Any, ...]]] = []

    def __call__(self, f: Any, *args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.queue.append((d, f, args))
        return d

    def run_one(self) -> None:
        """Run the oldest job, as a thread would, and deliver its result."""
        d, f, args = self.queue.pop(0)
        d.callback(f(*args))

    def run_all(self, limit: int = 1000) -> int:
        """Run jobs until none is left; how many ran."""
        for count in range(limit):
            if not self.queue:
                return count
            self.run_one()
        raise AssertionError("jobs never ran out")


class FakePool:
    """Stands in for a twisted ThreadPool: records work, runs it when told."""

    instances: list[FakePool] = []

    def __init__(self, *args: Any) -> None:
        self.work: list[tuple[Any, Any, tuple[Any, ...]]] = []
        self.ran: list[str] = []
        self.started = self.stopped = False
        FakePool.instances.append(self)

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any) -> None:
        self.work.append((on_result, f, args))

    def run_all(self) -> None:
        while self.work:
            on_result, f, args = self.work.pop(0)
            self.ran.append(f.__name__)
            on_result(True, f(*args))

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


class ThreadedReactor(MemoryReactorClock):
    """A memory reactor with a (fake) thread pool and callFromThread."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = FakePool()

    def getThreadPool(self) -> FakePool:
        return self.pool

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        f(*args, **kw)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class HashingTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp())
        self.addCleanup(lambda: __import__("shutil").rmtree(self.dir))
        self.threads = FakeThreads()

    def store(self, **limits: Any) -> FileStore:
        limits.setdefault("job_bytes", MIB)
        store = FileStore(Root.at(str(self.dir)), hasher=Hasher(self.threads, HashLimits(**limits)))
        store.root.fd()  # opened once and kept on purpose: not a leak
        return store

    def write(self, name: str, data: bytes) -> bytes:
        (self.dir / name).write_bytes(data)
        return data


class IdentityTests(HashingTestCase):
    def test_two_spellings_through_a_symlink_share_one_hash(self) -> None:
        """big and dotlink/big, asked at once, are one hash; a third spelling hits the cache."""
        data = self.write("big", os.urandom(3 * MIB))
        os.symlink(".", self.dir / "dotlink")
        store = self.store()
        first, second = store.stat("big"), store.stat("dotlink/big")
        self.assertEqual(store.hasher.in_flight, 1)
        self.assertEqual(len(self.threads.queue), 1)
        self.assertEqual(self.threads.run_all(), 4)  # 3 MiB in 1 MiB jobs, then end of file
        self.assertEqual(self.successResultOf(first).sha256, sha(data))
        self.assertEqual(self.successResultOf(second).sha256, sha(data))
        third = store.stat("dotlink/dotlink/big")
        self.assertEqual(self.successResultOf(third).sha256, sha(data))
        self.assertEqual(self.threads.queue, [])

    def test_a_modified_file_gets_a_new_hash(self) -> None:
        """Same path, new content (even with the old mtime): hashed again, new digest."""
        self.write("f", b"one")
        store = self.store()
        d = store.stat("f")
        self.threads.run_all()
        self.assertEqual(self.successResultOf(d).sha256, sha(b"one"))
        self.write("f", b"two")
        st = os.stat(self.dir / "f")
        os.utime(self.dir / "f", ns=(st.st_atime_ns, st.st_mtime_ns))
        d = store.stat("f")
        self.assertEqual(len(self.threads.queue), 1)
        self.threads.run_all()
        self.assertEqual(self.successResultOf(d).sha256, sha(b"two"))

    def test_a_file_changed_while_hashed_is_busy(self) -> None:
        """A write between two jobs: the digest is not given, nor cached; ERR busy."""
        self.write("f", bytes(2 * MIB))
        store = self.store()
        d = store.stat("f")
        self.threads.run_one()
        with open(self.dir / "f", "ab") as f:
            f.write(b"more")
        self.threads.run_all()
        self.failureResultOf(d, FileChanging)
        d = store.stat("f")
        self.assertEqual(len(self.threads.queue), 1)  # not cached: hashed anew


class BoundTests(HashingTestCase):
    def test_each_thread_job_is_bounded_so_a_small_file_interleaves(self) -> None:
        """A small file asked after a big one is answered after one job of the big one."""
        self.write("big", bytes(8 * MIB))
        self.write("small", b"x")
        store = self.store(threads=1)
        big, small = store.stat("big"), store.stat("small")
        self.threads.run_one()  # the big file's first MiB
        self.assertNoResult(small)
        self.threads.run_one()  # the small file, whole
        self.assertEqual(self.successResultOf(small).sha256, sha(b"x"))
        self.assertNoResult(big)
        self.threads.run_all()
        self.assertEqual(self.successResultOf(big).sha256, sha(bytes(8 * MIB)))

    def test_at_most_threads_jobs_run_at_once(self) -> None:
        """Five files with threads=2: two jobs handed to the pool, the rest wait their turn."""
        for i in range(5):
            self.write(f"f{i}", bytes(MIB))
        store = self.store(threads=2)
        ds = [store.stat(f"f{i}") for i in range(5)]
        self.assertEqual(len(self.threads.queue), 2)
        self.threads.run_all()
        self.assertEqual({self.successResultOf(d).sha256 for d in ds}, {sha(bytes(MIB))})

    def test_total_bound_refuses_a_new_hash_with_busy(self) -> None:
        """Over max_hashes a new file is refused at once; joining a running hash never is."""
        for name in ("a", "b", "c"):
            self.write(name, name.encode())
        store = self.store(max_hashes=2, max_per_owner=10)
        a, _b = store.stat("a", "10.0.0.1"), store.stat("b", "10.0.0.2")
        before = open_fds()
        failure = self.failureResultOf(store.stat("c", "10.0.0.3"), HashBusy)
        self.assertEqual(failure.value.code, "busy")
        self.assertEqual(open_fds(), before)  # the refused file was closed
        joined = store.stat("a", "10.0.0.3")
        self.threads.run_all()
        self.assertEqual(self.successResultOf(joined).sha256, self.successResultOf(a).sha256)
        again = store.stat("c", "10.0.0.3")  # room again
        self.threads.run_all()
        self.assertEqual(self.successResultOf(again).sha256, sha(b"c"))

    def test_per_owner_bound(self) -> None:
        """One client gets max_per_owner hashes at once; another client is not affected."""
        for name in ("a", "b", "c"):
            self.write(name, name.encode())
        store = self.store(max_per_owner=2)
        store.stat("a", "alice")
        store.stat("b", "alice")
        self.failureResultOf(store.stat("c", "alice"), HashBusy)
        bobs = store.stat("c", "bob")
        joined = store.stat("c", "alice")  # c is being hashed anyway: waiting for it is free
        self.assertEqual(store.hasher.in_flight, 3)
        self.threads.run_all()
        self.assertEqual(self.successResultOf(bobs).sha256, sha(b"c"))
        self.assertEqual(self.successResultOf(joined).sha256, sha(b"c"))
        self.successResultOf(store.stat("c", "alice"))  # cached now


class AbandonTests(HashingTestCase):
    def test_cancelling_every_waiter_abandons_the_hash(self) -> None:
        """The hash goes on while one asker waits; when the last one cancels it stops."""
        self.write("big", bytes(4 * MIB))
        store = self.store()
        fds = open_fds()
        first, second = store.stat("big"), store.stat("big")
        first.cancel()
        self.failureResultOf(first, defer.CancelledError)
        self.threads.run_one()
        self.assertEqual(store.hasher.in_flight, 1)
        second.cancel()
        self.failureResultOf(second, defer.CancelledError)
        self.assertEqual(store.hasher.in_flight, 0)
        self.assertEqual(self.threads.run_all(), 1)  # the job that was running, ends at once
        self.assertEqual(open_fds(), fds)

    def test_abandon_fails_waiters_stops_running_jobs_and_refuses_new(self) -> None:
        """abandon(): every waiter gets busy, a running job reads nothing more, fds closed."""
        self.write("big", bytes(4 * MIB))
        self.write("small", b"s")
        store = self.store(threads=1)
        fds = open_fds()
        big, small = store.stat("big"), store.stat("small")
        self.assertEqual(store.hasher.abandon(), 2)
        self.failureResultOf(big, HashBusy)
        self.failureResultOf(small, HashBusy)
        _d, f, (job, limit) = self.threads.queue[0]
        self.assertEqual(self.threads.run_all(), 1)
        self.assertEqual(job.offset, 0)  # cancelled before its first read
        self.assertEqual(open_fds(), fds)
        self.failureResultOf(store.stat("small"), HashBusy)

    def test_a_job_stops_between_reads_once_cancelled(self) -> None:
        """hash_some checks the cancelled flag before every read."""
        self.write("big", bytes(4 * MIB))
        store = self.store()
        store.stat("big")
        _d, _f, (job, _limit) = self.threads.queue[0]
        reads = []
        real_pread = os.pread

        def pread(fd: int, n: int, offset: int) -> bytes:
            reads.append(offset)
            job.cancelled = True  # as if abandon() ran while this read was in progress
            return real_pread(fd, n, offset)

        self.patch(os, "pread", pread)
        self.assertFalse(hash_some(job, 4 * MIB))
        self.assertEqual(reads, [0])


def feed(protocol: Any, data: bytes, byte_by_byte: bool) -> None:
    for piece in [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]:
        protocol.dataReceived(piece)


class ServerTests(HashingTestCase):
    def factory(self, **limits: Any) -> FileServerFactory:
        return FileServerFactory(self.store(**limits), MemoryReactorClock())

    def check_busy_over_the_per_client_bound(self, byte_by_byte: bool) -> None:
        self.write("a", b"a")
        self.write("b", b"b")
        self.write("c", b"c")
        factory = self.factory(max_per_owner=2)
        first, second, third = (connect(factory)[0] for _ in range(3))
        other, other_transport = connect(factory, host="192.0.2.8")
        feed(first, b"STAT a\n", byte_by_byte)
        feed(second, b"STAT b\n", byte_by_byte)
        feed(third, b"STAT c\n", byte_by_byte)
        answer = third.transport.value()
        self.assertTrue(answer.startswith(b"ERR busy 2 of your files are being hashed"), answer)
        feed(third, b"STAT a\n", byte_by_byte)  # joining a hash in progress is free
        feed(other, b"STAT c\n", byte_by_byte)  # another client is not affected
        self.threads.run_all()
        pump(other_transport)
        self.assertIn(b"sha256=" + sha(b"a").encode(), third.transport.value())
        self.assertIn(b"sha256=" + sha(b"c").encode(), other_transport.value())

    def test_busy_over_the_per_client_bound(self) -> None:
        """A third file hashed at once for one address: ERR busy; others still served."""
        self.check_busy_over_the_per_client_bound(byte_by_byte=False)

    def test_busy_over_the_per_client_bound_byte_by_byte(self) -> None:
        """The same, with every request fed one byte at a time."""
        self.check_busy_over_the_per_client_bound(byte_by_byte=True)

    def test_a_closed_connection_abandons_its_hash(self) -> None:
        """The only asker hangs up: the hash stops and its descriptor is closed."""
        self.write("big", bytes(4 * MIB))
        factory = self.factory()
        fds = open_fds()
        protocol, _transport = connect(factory)
        protocol.dataReceived(b"STAT big\n")
        self.threads.run_one()
        self.assertEqual(factory.store.hasher.in_flight, 1)
        protocol.connectionLost(None)
        self.assertEqual(factory.store.hasher.in_flight, 0)
        self.assertEqual(self.threads.run_all(), 1)
        self.assertEqual(open_fds(), fds)


class FactoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp())
        self.addCleanup(lambda: __import__("shutil").rmtree(self.dir))
        self.patch(hashing_module, "ThreadPool", FakePool)
        self.reactor = ThreadedReactor()
        self.files = make_files_factory(str(self.dir), self.reactor, writable=True)
        self.hash_pool = FakePool.instances[-1]
        self.assertIsNot(self.hash_pool, self.reactor.pool)

    def test_upload_fsyncs_never_wait_behind_hashes(self) -> None:
        """Hashes held on their pool: a PUT's fsyncs run on the reactor's pool and it is stored."""
        for name in ("big0", "big1"):
            (self.dir / name).write_bytes(bytes(2 * MIB))
        for name in ("big0", "big1"):
            connect(self.files)[0].dataReceived(f"STAT {name}\n".encode())
        self.assertEqual(len(self.hash_pool.work), 2)
        body = b"hello, world\n"
        put = f"PUT {len(body)} {sha(body)} new.txt\n".encode()
        protocol, transport = connect(self.files, host="192.0.2.9")
        protocol.dataReceived(put + body)
        self.reactor.pool.run_all()
        self.assertEqual(self.reactor.pool.ran, ["fsync", "fsync"])  # the file, its directory
        self.assertEqual(transport.value().split(b"\n")[1], f"OK stored 13 {sha(body)}".encode())
        self.assertEqual([f.__name__ for _, f, _ in self.hash_pool.work], ["hash_some"] * 2)

    def test_reactor_shutdown_abandons_hashes_then_stops_the_pool(self) -> None:
        """The 'during shutdown' trigger fails every waiting STAT with busy, then stops."""
        (self.dir / "big").write_bytes(bytes(2 * MIB))
        protocol, transport = connect(self.files)
        protocol.dataReceived(b"STAT big\n")
        self.assertIn((self.hash_pool.start, (), {}), self.reactor.whenRunningHooks)
        for trigger, args, kw in self.reactor.triggers["during"]["shutdown"]:
            trigger(*args, **kw)
        self.assertTrue(self.hash_pool.stopped)
        self.assertEqual(transport.value(), b"ERR busy the server is shutting down: big\n")
        self.hash_pool.run_all()  # the job queued before: returns at once, nothing restarts
        self.assertEqual(self.hash_pool.work, [])


class MakeHasherTests(SynchronousTestCase):
    def test_pool_starts_with_the_reactor(self) -> None:
        """make_hasher starts its pool only when the reactor runs."""
        reactor, pool = ThreadedReactor(), FakePool()
        make_hasher(reactor, HashLimits(), pool)
        self.assertFalse(pool.started)
        reactor.run()
        self.assertTrue(pool.started)
