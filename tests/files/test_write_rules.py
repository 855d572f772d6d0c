"""Uploads reserve what they declare, and writes answer like reads (HARDENING round two)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.testing import connect
from tcpfiles.tree import uploads as uploads_module
from tcpfiles.tree.accounts import FilesRealm
from tcpfiles.tree.hashing import inline
from tcpfiles.tree.paths import NotFound, Root
from tcpfiles.tree.store import FileStore
from tcpfiles.tree.uploads import Exists, SpaceLedger, TooLarge, Uploads, make_directory


def put_line(path: str, body: bytes, verb: str = "PUT") -> bytes:
    return f"{verb} {len(body)} {hashlib.sha256(body).hexdigest()} {path}\n".encode()


class _Disk:
    """A file system with ``free`` bytes available (os.fstatvfs stand-in)."""

    def __init__(self, free: int) -> None:
        self.f_bavail, self.f_frsize = free, 1


def _tree() -> tuple[Path, Path]:
    top = Path(tempfile.mkdtemp())
    served = top / "files"
    (served / "sub").mkdir(parents=True)
    (served / "a.txt").write_bytes(b"alpha")
    (top / "secret").write_bytes(b"outside")
    (top / "outdir").mkdir()
    os.symlink(str(top / "secret"), served / "esc_out")  # escaping, to a file
    os.symlink(str(top / "outdir"), served / "esc_dir")  # escaping, to a directory
    os.symlink("../secret", served / "esc_rel")  # escaping, relative
    os.symlink("nowhere", served / "dangling")
    os.symlink("loop", served / "loop")
    os.symlink("a.txt", served / "in_file")  # inside, to a file
    os.symlink("sub", served / "in_dir")  # inside, to a directory
    return top, served


class ReservationTests(SynchronousTestCase):
    """Declared sizes of uploads in flight are held against the free space."""

    def setUp(self) -> None:
        self.top, self.served = _tree()
        self.addCleanup(shutil.rmtree, self.top)
        self.patch(uploads_module.os, "fstatvfs", lambda fd: _Disk(1000))
        self.uploads = Uploads(Root.at(str(self.served)), 1 << 20, inline)

    def test_in_flight_uploads_reserve_their_size(self) -> None:
        """1000 bytes free, 600 + 600 declared: the second is too-large while the first runs."""
        first = self.uploads.begin("one", 600, "0" * 64, False)
        self.assertRaises(TooLarge, self.uploads.begin, "two", 600, "0" * 64, False)
        second = self.uploads.begin("two", 400, "0" * 64, False)
        self.assertEqual(self.uploads.ledger.promised(first.device), 1000)
        first.abort()
        second.abort()
        self.assertEqual(self.uploads.ledger.promised(first.device), 0)
        self.uploads.begin("three", 1000, "0" * 64, False).abort()

    def test_written_bytes_leave_the_ledger(self) -> None:
        """What an upload has written is on the disk, not promised: only the rest is held."""
        upload = self.uploads.begin("one", 600, "0" * 64, False)
        upload.write(b"x" * 250)
        self.assertEqual(self.uploads.ledger.promised(upload.device), 350)
        upload.abort()

    def test_finished_upload_releases(self) -> None:
        """A published upload no longer holds space."""
        body = b"hello"
        upload = self.uploads.begin("new", len(body), hashlib.sha256(body).hexdigest(), False)
        upload.write(body)
        self.successResultOf(upload.finish())
        self.assertEqual(self.uploads.ledger.promised(upload.device), 0)

    def test_ledger_shared_by_realm_roots(self) -> None:
        """Two accounts' roots on one file system share one ledger."""
        realm = FilesRealm(Root.at(str(self.served)), True, {}, 1 << 20, inline)
        _, one = realm.store_for(Root.at(str(self.served)))
        _, two = realm.store_for(Root.at(str(self.served / "sub")))
        self.assertIs(one.ledger, two.ledger)
        held = one.begin("x", 800, "0" * 64, False)
        self.assertRaises(TooLarge, two.begin, "y", 800, "0" * 64, False)
        held.abort()

    def test_ledger_counts_per_device(self) -> None:
        """Uploads on another file system do not count."""
        ledger = SpaceLedger()
        upload = self.uploads.begin("one", 600, "0" * 64, False)
        ledger.hold(upload)
        self.assertEqual(ledger.promised(upload.device + 1), 0)
        upload.abort()

    def test_wire_answer(self) -> None:
        """Over the wire: the second declared upload gets ERR too-large, nothing created."""
        store = FileStore(Root.at(str(self.served)), inline)
        factory = FileServerFactory(store, task.Clock(), Limits(), self.uploads)
        first, first_transport = connect(factory, port=1)
        second, second_transport = connect(factory, port=2)
        first.dataReceived(put_line("big1", b"x" * 700))
        self.assertEqual(first_transport.value(), b"OK send 700\n")
        second.dataReceived(put_line("big2", b"y" * 700))
        self.assertEqual(
            second_transport.value(), b"ERR too-large not enough free space on the server: big2\n"
        )


class _ServedTree(SynchronousTestCase):
    """A writable server over :func:`_tree`, answering in memory."""

    def setUp(self) -> None:
        self.top, self.served = _tree()
        self.addCleanup(shutil.rmtree, self.top)
        root = Root.at(str(self.served))
        self.root = root
        self.factory = FileServerFactory(
            FileStore(root, inline), task.Clock(), Limits(), Uploads(root, 1 << 20, inline)
        )

    def _ask(self, line: bytes, byte_by_byte: bool = False) -> bytes:
        protocol, transport = connect(self.factory)
        pieces = [line[i : i + 1] for i in range(len(line))] if byte_by_byte else [line]
        for piece in pieces:
            protocol.dataReceived(piece)
        return transport.value()


class WritesAnswerLikeReadsTests(_ServedTree):
    """PUT, REPLACE and MKDIR through symlinks give the answers GET gives."""

    def test_escaping_links_are_not_found_to_writes(self) -> None:
        """Escaping, dangling and looping links: PUT, REPLACE, MKDIR answer like GET."""
        for name in ("esc_out", "esc_dir", "esc_rel", "dangling", "loop"):
            read = self._ask(f"GET {name}\n".encode())
            self.assertEqual(read, f"ERR not-found no such file or directory: {name}\n".encode())
            for line in (
                put_line(name, b"x"),
                put_line(name, b"x", "REPLACE"),
                f"MKDIR {name}\n".encode(),
            ):
                for byte_by_byte in (False, True):
                    self.assertEqual(self._ask(line, byte_by_byte), read, line)
        self.assertEqual((self.top / "secret").read_bytes(), b"outside")
        self.assertEqual(os.readlink(self.served / "esc_out"), str(self.top / "secret"))
        self.assertEqual(os.listdir(self.top / "outdir"), [])

    def test_inside_links_keep_their_meaning(self) -> None:
        """A link to a file inside is an existing file; a link to a directory is a directory."""
        self.assertTrue(self._ask(put_line("in_file", b"x")).startswith(b"ERR exists "))
        self.assertTrue(self._ask(put_line("in_dir", b"x")).startswith(b"ERR not-a-file "))
        self.assertEqual(self._ask(b"MKDIR in_dir\n"), b"OK exists\n")
        self.assertTrue(self._ask(b"MKDIR in_file\n").startswith(b"ERR exists "))

    def test_make_directory_direct(self) -> None:
        """The library call raises NotFound for an escaping link, as open does."""
        self.assertRaises(NotFound, make_directory, self.root, "esc_dir")
        self.assertFalse(make_directory(self.root, "in_dir"))
        self.assertRaises(Exists, make_directory, self.root, "a.txt")

    def test_link_race_answers_like_reads(self) -> None:
        """An escaping link that appears between the checks and the publish is not-found too."""
        body = b"late"
        uploads = self.factory.uploads
        upload = uploads.begin("late", len(body), hashlib.sha256(body).hexdigest(), False)
        upload.write(body)
        os.symlink(str(self.top / "secret"), self.served / "late")
        failure = self.failureResultOf(upload.finish())
        failure.trap(NotFound)
        self.assertEqual([n for n in os.listdir(self.served) if n.startswith(".tcpfiles-")], [])


class TemporaryRefusedTests(_ServedTree):
    """A temporary the server cannot create gets the answer that says why, never a traceback."""

    def _answer_when_open_fails(self, errno_value: int) -> bytes:
        real_open = uploads_module.os.open

        def refusing(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
            if str(path).startswith(".tcpfiles-"):
                raise OSError(errno_value, os.strerror(errno_value))
            return real_open(path, flags, *args, **kwargs)

        self.patch(uploads_module.os, "open", refusing)
        protocol, transport = connect(self.factory)
        protocol.dataReceived(put_line("new.txt", b"x"))
        return transport.value()

    def test_permission_is_forbidden(self) -> None:
        """EACCES: ERR forbidden, as MKDIR answers in the same place."""
        import errno

        self.assertEqual(
            self._answer_when_open_fails(errno.EACCES),
            b"ERR forbidden the server may not write there: new.txt\n",
        )

    def test_full_disk_is_too_large(self) -> None:
        """ENOSPC: ERR too-large, the disk is full."""
        import errno

        self.assertEqual(
            self._answer_when_open_fails(errno.ENOSPC),
            b"ERR too-large the server's disk is full: new.txt\n",
        )


class WalkBoundsTests(_ServedTree):
    """Writes through a file answer like reads; walks are bounded in depth and in steps."""

    def test_through_a_file_is_not_found_to_writes_too(self) -> None:
        """``a.txt/x``: GET, PUT, REPLACE and MKDIR all say not-found."""
        expected = b"ERR not-found no such file or directory: a.txt/x\n"
        for line in (
            b"GET a.txt/x\n",
            put_line("a.txt/x", b"x"),
            put_line("a.txt/x", b"x", "REPLACE"),
            b"MKDIR a.txt/x\n",
        ):
            self.assertEqual(self._ask(line), expected, line)

    def test_too_deep_a_path_is_a_bad_request(self) -> None:
        """129 levels: ERR bad-request, for reads and MKDIR alike."""
        from tcpfiles.tree.paths import MAX_DEPTH

        deep = "/".join(["d"] * (MAX_DEPTH + 1))
        for verb in (b"GET", b"MKDIR"):
            answer = self._ask(verb + b" " + deep.encode() + b"\n")
            self.assertTrue(answer.startswith(b"ERR bad-request path deeper than"), answer)

    def test_crafted_link_chain_is_cut_short(self) -> None:
        """40 links whose targets walk ``a/../`` hundreds of times: not-found, after a bounded
        walk (the same answer as a loop)."""
        from tcpfiles.tree.paths import open_beneath

        (self.served / "a").mkdir()
        churn = "a/../" * 200
        for n in range(10):
            os.symlink(f"{churn}h{n + 1}", self.served / f"h{n}")
        (self.served / "h10").write_bytes(b"end")
        self.assertRaises(NotFound, open_beneath, self.root, ("h0",))
        os.symlink("a/../h10", self.served / "short")  # an ordinary link still works
        os.close(open_beneath(self.root, ("short",)))
