"""Confinement: every path case of HARDENING.md, and a property over a hostile tree."""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tcpfiles.tree import paths
from tcpfiles.tree.paths import (
    BadPath,
    Exhausted,
    Forbidden,
    NotADirectory,
    NotAFile,
    NotFound,
    PathError,
    Root,
    open_beneath,
    open_file_beneath,
    os_error,
    parse_path,
)
from tcpfiles.tree.store import FileStore
from tests.helpers import cases, temporary_directory, with_cases


def read(root: Root, path: str) -> bytes:
    fd = open_beneath(root, parse_path(path))
    try:
        return os.pread(fd, 100, 0)
    finally:
        os.close(fd)


NAMES = [
    "a.txt",
    "sub",
    "deeper",
    "b.txt",
    "c.txt",
    "up",
    "abs-out",
    "sibling",
    "etc",
    "in-rel",
    "in-abs",
    "in-dir",
    "loop1",
    "back",
    "too-far",
    "updir",
    "root-dir",
    "fifo",
    "x",
]


@with_cases
class ParsePathTests(SynchronousTestCase):
    """A wire path is split into parts verbatim, or refused; nothing is fixed up."""

    @cases(
        dotdot=("..",),
        dotdot_inside=("a/../b",),
        dot_first=("./a",),
        dot_last=("a/.",),
        backslash=("a\\b",),
        nul=("a\x00b",),
        newline=("a\nb",),
        terminal_escape=("\x1b[2J",),
        delete=("a\x7fb",),
        nel=("a\u0085b",),
        part_too_long=("x" * 256,),
        path_too_long=("/".join(["d" * 200] * 21),),
    )
    def test_parse_path_rejects(self, text) -> None:
        """Dot parts, control characters, backslashes and over-long paths are refused, not fixed."""
        with self.assertRaises(BadPath):
            parse_path(text)

    @cases(
        plain=("a.txt", ("a.txt",)),
        leading_slash=("/a.txt", ("a.txt",)),
        double_and_trailing_slash=("a//b/", ("a", "b")),
        spaces=("with space/x y", ("with space", "x y")),
        percent_encoded_dots=("%2e%2e/x", ("%2e%2e", "x")),
        fullwidth_dots=("\uff0e\uff0e/x", ("\uff0e\uff0e", "x")),
        three_dots=("...", ("...",)),
        empty=("", ()),
        slash=("/", ()),
        part_of_255=("x" * 255, ("x" * 255,)),
    )
    def test_parse_path_accepts(self, text, parts) -> None:
        """Ordinary paths split into parts verbatim; nothing is decoded or normalised."""
        assert parse_path(text) == parts


@with_cases
class BeneathTests(SynchronousTestCase):
    """Opening beneath a root with good and hostile entries: what is inside, and only that."""

    def setUp(self) -> None:
        """A root with good and hostile entries, and a sibling whose name starts with the root's."""
        tmp_path = temporary_directory(self)
        root = tmp_path / "root"
        (root / "sub" / "deeper").mkdir(parents=True)
        (root / "a.txt").write_bytes(b"A")
        (root / "sub" / "b.txt").write_bytes(b"B")
        (root / "sub" / "deeper" / "c.txt").write_bytes(b"C")
        evil = tmp_path / "root_evil"
        evil.mkdir()
        (evil / "secret").write_bytes(b"S")
        (tmp_path / "outside.txt").write_bytes(b"O")
        links = {
            "up": "../outside.txt",
            "abs-out": str(tmp_path / "outside.txt"),
            "sibling": "../root_evil/secret",
            "etc": "/etc/passwd",
            "zero": "/dev/zero",
            "in-rel": "sub/b.txt",
            "in-abs": str(root / "a.txt"),
            "in-dir": "sub",
            "loop1": "loop2",
            "loop2": "loop1",
            "dangling": "nothing-here",
            "sub/deeper/back": "../../a.txt",
            "sub/deeper/too-far": "../../../outside.txt",
            "sub/updir": "..",
            "sub/root-dir": str(root),
        }
        for name, target in links.items():
            os.symlink(target, root / name)
        os.mkfifo(root / "fifo")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(root / "sock"))
        sock.close()
        self.tree = Root.at(str(root))

    @cases(
        plain=("a.txt", b"A"),
        in_sub=("sub/b.txt", b"B"),
        link_relative=("in-rel", b"B"),
        link_absolute=("in-abs", b"A"),
        through_dir_link=("in-dir/deeper/c.txt", b"C"),
        link_back_up=("sub/deeper/back", b"A"),
        through_updir_link=("sub/updir/a.txt", b"A"),
        through_root_link=("sub/root-dir/sub/b.txt", b"B"),
    )
    def test_inside_paths_and_inside_symlinks_work(self, path, content) -> None:
        """Plain paths and symlinks that stay inside the root are served."""
        assert read(self.tree, path) == content

    @cases(
        up=("up",),
        abs_out=("abs-out",),
        sibling=("sibling",),
        etc=("etc",),
        zero=("zero",),
        loop1=("loop1",),
        dangling=("dangling",),
        missing=("missing",),
        too_far=("sub/deeper/too-far",),
        under_a_file=("a.txt/x",),
        updir_dotdot_x=("sub/updir/..x",),
        under_a_link_to_a_file=("in-rel/x",),
    )
    def test_outside_missing_and_broken_look_the_same(self, path) -> None:
        """Escaping links, loops, dangling links and missing files give one identical answer."""
        with self.assertRaises(NotFound) as caught:
            read(self.tree, path)
        assert str(caught.exception) == "no such file or directory"

    @cases(
        fifo=("fifo",),
        sock=("sock",),
        sub=("sub",),
        in_dir=("in-dir",),
        root=("",),
    )
    def test_non_regular_files_are_refused_without_blocking(self, path) -> None:
        """A FIFO, a socket or a directory is 'not a file'; a FIFO never blocks the caller."""
        signal.alarm(5)  # an open() of the FIFO would hang here; fail loudly instead
        try:
            with self.assertRaises(NotAFile):
                read(self.tree, path)
        finally:
            signal.alarm(0)

    def test_device_node_is_refused(self) -> None:
        """A character device inside the root is not a file (skipped where mknod is not allowed)."""
        try:
            os.mknod(os.path.join(self.tree.real, "null"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except PermissionError:
            raise SkipTest("mknod needs CAP_MKNOD") from None
        with self.assertRaises(NotAFile):
            read(self.tree, "null")

    def test_directories(self) -> None:
        """want='dir' opens directories (through inside links) and refuses files."""
        os.close(open_beneath(self.tree, ("in-dir", "deeper"), want="dir"))
        os.close(open_beneath(self.tree, (), want="dir"))
        with self.assertRaises(NotADirectory):
            open_beneath(self.tree, ("a.txt",), want="dir")
        with self.assertRaises(NotFound):
            open_beneath(self.tree, ("up",), want="dir")

    def test_unreadable_file_is_forbidden(self) -> None:
        """A file the server may not open (EACCES) is 'forbidden'; the check works as root too."""
        real_open = os.open

        def open_refusing_locked(path, flags, *args, **kwargs):
            if path == "a.txt":
                raise PermissionError(13, "Permission denied")
            return real_open(path, flags, *args, **kwargs)

        self.patch(os, "open", open_refusing_locked)
        with self.assertRaises(PathError) as caught:
            read(self.tree, "a.txt")
        assert caught.exception.code == "forbidden"

    def test_no_descriptor_leaks(self) -> None:
        """Success and every kind of refusal close every directory descriptor they opened."""
        self.tree.fd()  # the root's own descriptor is opened once and kept on purpose
        before = len(os.listdir("/proc/self/fd"))
        for path in ["a.txt", "up", "loop1", "fifo", "sub/deeper/back", "in-dir/deeper", "missing"]:
            try:
                os.close(open_beneath(self.tree, parse_path(path), want="any"))
            except PathError:
                pass
        assert len(os.listdir("/proc/self/fd")) == before

    @settings(max_examples=300)
    @given(
        st.lists(st.sampled_from(NAMES), min_size=0, max_size=8),
        st.sampled_from(["file", "dir", "any"]),
    )
    def test_nothing_outside_the_root_is_ever_opened(self, parts, want) -> None:
        """Property: whatever path is walked, what gets opened lies inside the root."""
        try:
            fd = open_beneath(self.tree, tuple(parts), want=want)
        except PathError:
            return
        try:
            opened = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        assert opened == self.tree.real or opened.startswith(self.tree.real + "/"), (parts, opened)


# --- running out of descriptors is "busy", never "missing" -------------------------------------

EXHAUSTION = (errno.EMFILE, errno.ENFILE, errno.ENOMEM)


def exhausting(code: int = errno.EMFILE):
    """A stand-in for ``os.<name>`` that fails as a process out of descriptors does."""

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


class ExhaustionTests(SynchronousTestCase):
    """EMFILE/ENFILE/ENOMEM anywhere a path opens a descriptor answer Exhausted (busy)."""

    def setUp(self) -> None:
        self.dir = temporary_directory(self)
        (self.dir / "sub").mkdir()
        (self.dir / "a.txt").write_bytes(b"alpha")
        (self.dir / "sub" / "b.txt").write_bytes(b"beta")
        os.symlink("a.txt", self.dir / "link")
        self.root = Root.at(str(self.dir))

    def test_os_error_is_the_one_mapping(self) -> None:
        """Exhaustion is busy, permission forbidden, anything else about the path not-found."""
        for code in (*EXHAUSTION, errno.ENOBUFS):
            mapped = os_error(OSError(code, os.strerror(code)))
            self.assertIsInstance(mapped, Exhausted)
            self.assertEqual(mapped.code, "busy")
        self.assertIsInstance(os_error(OSError(errno.EACCES, "x")), Forbidden)
        self.assertIsInstance(os_error(OSError(errno.ENOENT, "x")), NotFound)
        self.assertIsNone(paths.exhausted(OSError(errno.ENOENT, "x")))

    def test_fresh_root_descriptor(self) -> None:
        """The root's own descriptor failing to open is busy, and is opened once it can be."""
        self.patch(os, "open", exhausting())
        self.assertRaises(Exhausted, self.root.fd)
        self.assertRaises(Exhausted, open_file_beneath, self.root, ("a.txt",))
        self.assertEqual(self.root._fd, [])
        self.patch(os, "open", OS_OPEN)
        fd, _st = open_file_beneath(self.root, ("a.txt",))
        os.close(fd)

    def test_file_open(self) -> None:
        """A regular file that cannot be opened for want of descriptors is busy, not missing."""
        self.root.fd()
        for code in EXHAUSTION:
            self.patch(os, "open", exhausting(code))
            with self.assertRaises(Exhausted):
                open_file_beneath(self.root, ("a.txt",))
            with self.assertRaises(Exhausted):  # through a symlink too
                open_file_beneath(self.root, ("link",))

    def test_directory_step(self) -> None:
        """A directory on the way that cannot be opened is busy."""
        self.root.fd()
        self.patch(os, "open", exhausting())
        self.assertRaises(Exhausted, open_file_beneath, self.root, ("sub", "b.txt"))
        self.assertRaises(Exhausted, open_beneath, self.root, ("sub",), want="dir")

    def test_root_duplicate(self) -> None:
        """Opening the root itself duplicates its descriptor: EMFILE there is busy."""
        self.root.fd()
        self.patch(os, "dup", exhausting())
        self.assertRaises(Exhausted, open_beneath, self.root, (), want="dir")

    def test_still_missing_is_not_found(self) -> None:
        """Without exhaustion, a missing file is still not-found (the mapping is not blanket)."""
        self.assertRaises(NotFound, open_file_beneath, self.root, ("nope",))

    def test_store_list_and_stat(self) -> None:
        """LIST (scandir duplicates the descriptor; links are resolved) and STAT are busy."""
        store = FileStore(self.root)
        self.root.fd()
        self.patch(os, "scandir", exhausting())
        self.assertRaises(Exhausted, store.open_listing, "sub")
        self.patch(os, "scandir", OS_SCANDIR)
        self.patch(os, "open", exhausting())
        self.assertRaises(Exhausted, store.open_listing, "sub")
        self.failureResultOf(store.stat("a.txt"), Exhausted)
        self.patch(os, "open", OS_OPEN)
        # The root listing: dup is fine, but the symlink "link" cannot be resolved.  It must
        # not be silently left out of the listing.
        real_open = OS_OPEN
        calls = []

        def open_dirs_only(path, flags, *args, **kwargs):
            calls.append(path)
            if path == "a.txt":
                raise OSError(errno.EMFILE, "Too many open files")
            return real_open(path, flags, *args, **kwargs)

        self.patch(os, "open", open_dirs_only)
        listing = store.open_listing("")
        self.failureResultOf(listing.read(10), Exhausted)
        listing.close()
        self.patch(os, "open", OS_OPEN)
        listing = store.open_listing("")
        batch = self.successResultOf(listing.read(10))
        listing.close()
        self.assertEqual(sorted(e.name for e in batch.rows), [b"a.txt", b"link", b"sub"])


OS_OPEN = os.open
OS_SCANDIR = os.scandir
