"""Small files kept open between requests: reused only while the path leads to the same file,
never stale, never past a symlink, bounded, and closed once nobody reads from them."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.testing import connect, respond
from tcpfiles.tree import filecache
from tcpfiles.tree.hashing import inline
from tcpfiles.tree.paths import Exhausted, Forbidden, NotFound, Root
from tcpfiles.tree.store import FileStore
from tcpfiles.tree.uploads import Uploads
from tests.helpers import temporary_directory


def read(store: FileStore, path: str) -> bytes:
    opened = store.open_file(path)
    try:
        return os.pread(opened.fd, opened.size + 1, 0)
    finally:
        opened.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class KeptFilesTests(SynchronousTestCase):
    """FileStore with files kept open."""

    def setUp(self) -> None:
        self.dir = temporary_directory(self) / "files"
        (self.dir / "sub").mkdir(parents=True)
        (self.dir / "a.txt").write_bytes(b"alpha\n")
        (self.dir / "sub" / "b.txt").write_bytes(b"beta\n")
        self.store = FileStore(Root.at(str(self.dir)), inline, keep_open=4)
        self.store.root.fd()
        self.addCleanup(self.store.open_files.clear)

    def count_opens(self) -> list[str]:
        opened: list[str] = []
        real = os.open

        def counting(path, *args, **kwargs):  # type: ignore[no-untyped-def]
            opened.append(path)
            return real(path, *args, **kwargs)

        self.patch(os, "open", counting)
        return opened

    def test_second_read_opens_nothing(self) -> None:
        """Kept after the first GET: the next one opens no descriptor."""
        self.assertEqual(read(self.store, "a.txt"), b"alpha\n")
        self.assertEqual(read(self.store, "sub/b.txt"), b"beta\n")
        opens = self.count_opens()
        before = open_fds()
        self.assertEqual(read(self.store, "/a.txt"), b"alpha\n")
        self.assertEqual(read(self.store, "sub//b.txt"), b"beta\n")
        self.assertEqual(opens, [])
        self.assertEqual(open_fds(), before)
        self.assertEqual(len(self.store.open_files), 2)

    def test_changed_in_place_is_read_as_it_is_now(self) -> None:
        """Written over (same inode, same size, mtime forced back): the new bytes."""
        self.assertEqual(read(self.store, "a.txt"), b"alpha\n")
        stat = os.stat(self.dir / "a.txt")
        (self.dir / "a.txt").write_bytes(b"ALPHA\n")
        os.utime(self.dir / "a.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns))
        self.assertEqual(read(self.store, "a.txt"), b"ALPHA\n")
        (self.dir / "a.txt").write_bytes(b"longer now\n")
        self.assertEqual(read(self.store, "a.txt"), b"longer now\n")

    def test_replaced_file_is_the_new_one(self) -> None:
        """Replaced by a rename (an upload does that): the new file, the old descriptor closed."""
        self.assertEqual(read(self.store, "a.txt"), b"alpha\n")
        before = open_fds()
        (self.dir / "new").write_bytes(b"replaced\n")
        os.replace(self.dir / "new", self.dir / "a.txt")
        self.assertEqual(read(self.store, "a.txt"), b"replaced\n")
        self.assertEqual(open_fds(), before)

    def test_removed_file_is_not_found(self) -> None:
        """Deleted: not found, and its descriptor closed."""
        read(self.store, "a.txt")
        before = open_fds()
        os.unlink(self.dir / "a.txt")
        self.assertRaises(NotFound, self.store.open_file, "a.txt")
        self.assertEqual(open_fds(), before - 1)

    def test_replaced_by_escaping_symlink_is_refused(self) -> None:
        """The file, or a directory on its path, becomes a symlink leaving the root: refused."""
        outside = self.dir.parent / "outside"
        (outside / "sub").mkdir(parents=True)
        (outside / "a.txt").write_bytes(b"secret\n")
        (outside / "sub" / "b.txt").write_bytes(b"secret\n")
        read(self.store, "a.txt")
        read(self.store, "sub/b.txt")
        os.unlink(self.dir / "a.txt")
        os.symlink(outside / "a.txt", self.dir / "a.txt")
        self.assertRaises(NotFound, self.store.open_file, "a.txt")
        shutil.rmtree(self.dir / "sub")
        os.symlink(outside / "sub", self.dir / "sub")
        self.assertRaises(NotFound, self.store.open_file, "sub/b.txt")
        self.assertEqual(len(self.store.open_files), 0)

    def test_directory_moved_out_and_linked_is_refused(self) -> None:
        """The very same directory moved outside the root, a symlink left in its place."""
        read(self.store, "sub/b.txt")
        outside = self.dir.parent / "moved"
        os.rename(self.dir / "sub", outside)
        os.symlink(outside, self.dir / "sub")
        self.assertRaises(NotFound, self.store.open_file, "sub/b.txt")

    def test_reached_through_a_symlink_is_not_kept(self) -> None:
        """A path whose walk met a symlink (inside the root) is served, and walked every time."""
        os.symlink("a.txt", self.dir / "link")
        self.assertEqual(read(self.store, "link"), b"alpha\n")
        self.assertEqual(len(self.store.open_files), 0)

    def test_chmod_is_noticed(self) -> None:
        """A file the server may no longer open is not served from the kept descriptor."""
        if os.geteuid() == 0:
            self.skipTest("root opens files whatever their mode")
        read(self.store, "a.txt")
        os.chmod(self.dir / "a.txt", 0)
        self.addCleanup(os.chmod, self.dir / "a.txt", 0o644)
        self.assertRaises(Forbidden, self.store.open_file, "a.txt")

    def test_bounded_in_count_and_size(self) -> None:
        """At most keep_open files, the least recently used dropped; big files never kept."""
        for i in range(6):
            (self.dir / f"f{i}").write_bytes(b"x")
            read(self.store, f"f{i}")
        self.assertEqual(len(self.store.open_files), 4)
        (self.dir / "big").write_bytes(b"x" * (filecache.MAX_FILE_BYTES + 1))
        read(self.store, "big")
        self.assertEqual(len(self.store.open_files), 4)
        self.assertNotIn(("big",), self.store.open_files._entries)
        self.assertNotIn(("f0",), self.store.open_files._entries)

    def test_dropped_while_read_is_closed_after(self) -> None:
        """A descriptor dropped while someone reads from it stays open until given back."""
        read(self.store, "a.txt")
        opened = self.store.open_file("a.txt")
        os.replace(self.dir / "sub" / "b.txt", self.dir / "a.txt")
        self.assertEqual(read(self.store, "a.txt"), b"beta\n")  # drops the kept one
        self.assertEqual(os.pread(opened.fd, 10, 0), b"alpha\n")  # still readable
        before = open_fds()
        opened.close()
        self.assertEqual(open_fds(), before - 1)

    def test_out_of_descriptors_gives_kept_ones_back(self) -> None:
        """EMFILE opening another file: the kept descriptors are closed, the answer busy; a
        kept file is still served (it needs no new descriptor)."""
        read(self.store, "a.txt")
        read(self.store, "sub/b.txt")

        def emfile(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

        real = os.open
        self.patch(os, "open", emfile)
        self.assertEqual(read(self.store, "a.txt"), b"alpha\n")
        (self.dir / "c.txt").write_bytes(b"c")
        before = open_fds()
        self.assertRaises(Exhausted, self.store.open_file, "c.txt")
        self.assertEqual(open_fds(), before - 2)
        self.patch(os, "open", real)
        self.assertEqual(read(self.store, "a.txt"), b"alpha\n")

    def test_default_store_keeps_nothing(self) -> None:
        """A FileStore made without keep_open opens every time (the servers' stores keep)."""
        store = FileStore(Root.at(str(self.dir)), inline)
        read(store, "a.txt")
        self.assertEqual(len(store.open_files), 0)


class ServerTests(SynchronousTestCase):
    """Through the files server: a changed file is served as it is now."""

    def test_get_after_change_sends_new_content(self) -> None:
        """GET, change the file (same size), GET again on the same connection: the new bytes."""
        directory = temporary_directory(self) / "files"
        directory.mkdir()
        path = Path(directory) / "a.txt"
        path.write_bytes(b"alpha\n")
        root = Root.at(str(directory))
        store = FileStore(root, inline, keep_open=filecache.MAX_FILES)
        self.addCleanup(store.open_files.clear)
        factory = FileServerFactory(store, task.Clock(), Limits(), Uploads(root, 1 << 20, inline))
        protocol, transport = connect(factory)
        self.assertEqual(respond(protocol, transport, b"GET a.txt\n"), b"OK 6\nalpha\n")
        path.write_bytes(b"omega\n")
        self.assertEqual(respond(protocol, transport, b"GET a.txt\n"), b"OK 6\nomega\n")
        path.write_bytes(b"longer\n!")
        self.assertEqual(respond(protocol, transport, b"GET a.txt\n"), b"OK 8\nlonger\n!")
        self.assertEqual(respond(protocol, transport, b"RESUME 6 a.txt\n"), b"OK 2\n\n!")
        os.unlink(path)
        self.assertTrue(respond(protocol, transport, b"GET a.txt\n").startswith(b"ERR not-found"))
        protocol.transport.loseConnection()


class PrefixesTests(SynchronousTestCase):
    """Each level's path below the root, kept only for paths of bounded depth."""

    def test_levels_and_what_is_kept(self) -> None:
        from tcpfiles.tree import filecache

        shallow = ("a", "b", "c")
        assert filecache._prefixes(shallow) == ("a", "a/b", "a/b/c")
        assert filecache._prefixes(shallow) is filecache._prefixes(shallow)
        deep = tuple(f"d{n}" for n in range(filecache._PREFIXES_KEPT_DEPTH + 1))
        kept = filecache._kept_prefixes.cache_info().currsize
        assert filecache._prefixes(deep)[-1] == "/".join(deep)
        assert len(filecache._prefixes(deep)) == len(deep)
        assert filecache._kept_prefixes.cache_info().currsize == kept  # made, not kept
