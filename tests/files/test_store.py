"""The file store: listing rules and the sha256 cache."""

from __future__ import annotations

import hashlib
import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.tree.paths import NotFound, Root
from tcpfiles.tree.store import TEMP_PREFIX, FileStore
from tests.helpers import temporary_directory


class CountingThreads:
    """Runs work inline when told to, counting how often it was asked."""

    def __init__(self, hold: bool = False) -> None:
        self.calls = 0
        self.hold = hold
        self.held: list[tuple[defer.Deferred, object, tuple]] = []

    def __call__(self, f, *args):
        self.calls += 1
        if self.hold:
            d = defer.Deferred()
            self.held.append((d, f, args))
            return d
        return defer.maybeDeferred(f, *args)

    def release(self) -> None:
        for d, f, args in self.held:
            d.callback(f(*args))
        self.held = []


def result_of(d: defer.Deferred):
    results = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    return results[0]


class StoreTests(SynchronousTestCase):
    """The file store: listing rules and the sha256 cache."""

    def setUp(self) -> None:
        self.root = temporary_directory(self) / "files"
        self.root.mkdir()

    def test_list_hides_temporaries_specials_and_escapes(self) -> None:
        """LIST shows files and directories (one whose name no request can carry, here not UTF-8,
        as ``x``); not temporaries, FIFOs or escaping links."""
        (self.root / "b.txt").write_bytes(b"bb")
        (self.root / "a").mkdir()
        (self.root / f"{TEMP_PREFIX}upload-123").write_bytes(b"partial")
        os.mkfifo(self.root / "fifo")
        os.symlink("/etc", self.root / "etc")
        os.symlink("b.txt", self.root / "link-in")
        with open(os.path.join(os.fsencode(self.root), b"latin-\xe9"), "wb") as f:
            f.write(b"x")
        store = FileStore(Root.at(str(self.root)))
        batch = result_of(store.open_listing("").read(100))
        assert batch.end
        entries = sorted(batch.rows, key=lambda e: e.name)  # directory order: sorted here
        assert [(e.kind, e.size, e.name) for e in entries] == [
            ("d", None, b"a"),
            ("f", 2, b"b.txt"),
            ("x", None, b"latin-\xe9"),
            ("f", 2, b"link-in"),
        ]

    def test_temporaries_cannot_be_fetched(self) -> None:
        """Upload temporaries are invisible to GET and STAT too."""
        (self.root / f"{TEMP_PREFIX}x").write_bytes(b"partial")
        store = FileStore(Root.at(str(self.root)))
        with self.assertRaises(NotFound):
            store.open_file(f"{TEMP_PREFIX}x")
        assert result_of(store.stat(f"{TEMP_PREFIX}x")).check(NotFound)

    def test_sha256_is_cached_until_the_file_changes(self) -> None:
        """The second STAT of an unchanged file does not hash again; a change does."""
        target = self.root / "f.bin"
        target.write_bytes(b"one")
        threads = CountingThreads()
        store = FileStore(Root.at(str(self.root)), threads)
        assert result_of(store.stat("f.bin")).sha256 == hashlib.sha256(b"one").hexdigest()
        assert result_of(store.stat("/f.bin")).sha256 == hashlib.sha256(b"one").hexdigest()
        assert threads.calls == 1
        target.write_bytes(b"two")
        os.utime(target, ns=(1, 1))  # even with an old mtime: the ctime and size still change
        assert result_of(store.stat("f.bin")).sha256 == hashlib.sha256(b"two").hexdigest()
        assert threads.calls == 2

    def test_concurrent_stats_share_one_hash(self) -> None:
        """Ten STATs of one file while it is being hashed cost one hash."""
        (self.root / "f.bin").write_bytes(b"data")
        threads = CountingThreads(hold=True)
        store = FileStore(Root.at(str(self.root)), threads)
        waiting = [store.stat("f.bin") for _ in range(10)]
        assert threads.calls == 1
        threads.release()
        assert {result_of(d).sha256 for d in waiting} == {hashlib.sha256(b"data").hexdigest()}

    def test_no_descriptor_leaks(self) -> None:
        """Opening, hashing and listing leave no descriptor open."""
        (self.root / "f.bin").write_bytes(b"data")
        store = FileStore(Root.at(str(self.root)))
        store.root.fd()  # opened once and kept on purpose
        before = len(os.listdir("/proc/self/fd"))
        result_of(store.stat("f.bin"))
        result_of(store.stat("f.bin"))
        result_of(store.stat("/"))
        listing = store.open_listing("/")
        result_of(listing.read(100))
        listing.close()
        store.open_file("f.bin").close()
        assert len(os.listdir("/proc/self/fd")) == before
