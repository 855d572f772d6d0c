"""Uploads through the server protocol on a fake transport: every HARDENING upload rule."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.testing import connect
from tcpfiles.tree.hashing import inline
from tcpfiles.tree.paths import Root
from tcpfiles.tree.store import FileStore
from tcpfiles.tree.sweep import remove_stale_temporaries
from tcpfiles.tree.uploads import Uploads
from tests.helpers import cases, temporary_directory, with_cases


def make(root, writable=True, max_upload=1 << 20, clock=None, **limits):
    store = FileStore(Root.at(str(root)), inline)
    uploads = Uploads(Root.at(str(root)), max_upload, inline) if writable else None
    return FileServerFactory(store, clock or task.Clock(), Limits(**limits), uploads)


def put_line(path: str, body: bytes, verb: str = "PUT") -> bytes:
    return f"{verb} {len(body)} {hashlib.sha256(body).hexdigest()} {path}\n".encode()


def temporaries(root) -> list[str]:
    return [
        name for _, _, files in os.walk(root) for name in files if name.startswith(".tcpfiles-")
    ]


@with_cases
class UploadTests(SynchronousTestCase):
    """Uploads through the server protocol on a fake transport."""

    def setUp(self) -> None:
        tmp_path = temporary_directory(self)
        self.root = served = tmp_path / "files"
        (served / "sub").mkdir(parents=True)
        (served / "old.txt").write_bytes(b"old")
        os.symlink(str(tmp_path), served / "outside")

    @cases(
        whole=(False,),
        byte_by_byte=(True,),
    )
    def test_upload_whole_or_byte_by_byte(self, byte_by_byte) -> None:
        """PUT, then the body (and a pipelined request after it), however it is split."""
        protocol, transport = connect(make(self.root))
        body = os.urandom(5000)
        protocol.dataReceived(put_line("sub/new.bin", body))
        assert transport.value() == b"OK send 5000\n"
        data = body + b"STAT sub/new.bin\n"
        for piece in [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]:
            protocol.dataReceived(piece)
        sha = hashlib.sha256(body).hexdigest()
        lines = transport.value().split(b"\n")
        assert lines[1] == f"OK stored 5000 {sha}".encode()
        assert lines[2].startswith(b"OK type=file size=5000") and lines[2].endswith(sha.encode())
        assert (self.root / "sub" / "new.bin").read_bytes() == body
        assert temporaries(self.root) == []

    def test_body_sent_without_waiting_still_works(self) -> None:
        """A client that sends PUT and body in one go (not waiting for OK send) is served."""
        protocol, transport = connect(make(self.root))
        protocol.dataReceived(put_line("a.txt", b"abc") + b"abc" + b"LIST sub\n")
        assert transport.value().startswith(b"OK send 3\nOK stored 3 ")
        assert transport.value().endswith(b"OK list\nEND 0\n")

    def test_read_only_server_refuses_writes(self) -> None:
        """Without --writable, PUT, REPLACE and MKDIR are answered read-only."""
        protocol, transport = connect(make(self.root, writable=False))
        protocol.dataReceived(put_line("a", b"x") + put_line("a", b"x", "REPLACE") + b"MKDIR d\n")
        assert [line.split(b" ")[1] for line in transport.value().splitlines()] == [
            b"read-only"
        ] * 3

    def test_exists_unless_replace(self) -> None:
        """PUT over an existing file is refused; REPLACE overwrites it atomically."""
        protocol, transport = connect(make(self.root))
        protocol.dataReceived(put_line("old.txt", b"new"))
        assert transport.value().startswith(b"ERR exists")
        transport.clear()
        protocol.dataReceived(put_line("old.txt", b"new", "REPLACE") + b"new")
        assert transport.value().startswith(b"OK send 3\nOK stored 3")
        assert (self.root / "old.txt").read_bytes() == b"new"

    def test_limits_checked_before_any_body_byte(self) -> None:
        """Over --max-upload, or over the free space: too-large, and no temporary is created."""
        protocol, transport = connect(make(self.root, max_upload=10))
        protocol.dataReceived(put_line("big", b"x" * 11))
        assert transport.value().startswith(b"ERR too-large 11 bytes is over")
        transport.clear()

        class AlmostFull:
            f_bavail, f_frsize = 2, 4  # 8 bytes free

        self.patch(os, "fstatvfs", lambda fd: AlmostFull())
        protocol.dataReceived(put_line("fits", b"y" * 8) + b"y" * 8)
        assert transport.value().startswith(b"OK send 8\nOK stored 8")
        transport.clear()
        protocol.dataReceived(put_line("too-big", b"y" * 9))
        assert transport.value() == b"ERR too-large not enough free space on the server: too-big\n"
        assert temporaries(self.root) == []

    def test_mismatch_discards_and_keeps_the_connection(self) -> None:
        """A body that does not match its sha256 is not published; the connection goes on."""
        protocol, transport = connect(make(self.root))
        line = put_line("bad.bin", b"right")
        protocol.dataReceived(line + b"wrong" + b"MKDIR d\n")
        assert b"ERR mismatch" in transport.value()
        assert transport.value().endswith(b"OK created\n")
        assert not (self.root / "bad.bin").exists() and temporaries(self.root) == []

    def test_one_upload_per_name(self) -> None:
        """A second upload of the same name while the first is running gets busy."""
        factory = make(self.root)
        first, first_t = connect(factory, port=1)
        second, second_t = connect(factory, port=2)
        first.dataReceived(put_line("same", b"first!"))
        first.dataReceived(b"fir")
        second.dataReceived(put_line("same", b"second", "REPLACE"))
        assert second_t.value().startswith(b"ERR busy another upload of this file")
        first.dataReceived(b"st!")
        assert (self.root / "same").read_bytes() == b"first!"

    def test_disconnect_mid_body_removes_the_temporary(self) -> None:
        """A client gone mid-body leaves no partial file and no temporary."""
        protocol, _ = connect(make(self.root))
        protocol.dataReceived(put_line("partial", b"x" * 100) + b"x" * 40)
        assert len(temporaries(self.root)) == 1
        protocol.connectionLost(None)
        assert temporaries(self.root) == [] and not (self.root / "partial").exists()

    def test_stalled_upload_is_dropped(self) -> None:
        """A body that stops arriving is aborted after the stall timeout, temporary removed."""
        clock = task.Clock()
        protocol, transport = connect(make(self.root, clock=clock, stall_timeout=10))
        protocol.dataReceived(put_line("slow", b"x" * 100) + b"x")
        clock.advance(9)
        protocol.dataReceived(b"x")
        clock.advance(9)
        assert not transport.disconnecting
        clock.advance(1)
        assert transport.disconnecting
        protocol.connectionLost(None)
        assert temporaries(self.root) == []

    def test_disk_full_mid_body(self) -> None:
        """ENOSPC while writing: the rest of the body is skipped, a clear error, nothing left."""
        protocol, transport = connect(make(self.root))
        real_write = os.write

        def full(fd, data):
            if len(data) and os.fstat(fd).st_size >= 10:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        self.patch(os, "write", full)
        body = b"z" * 30
        protocol.dataReceived(put_line("full.bin", body))
        for n in range(0, 30, 10):
            protocol.dataReceived(body[n : n + 10])
        protocol.dataReceived(b"STAT old.txt\n")
        lines = transport.value().splitlines()
        assert lines[1] == b"ERR too-large the server's disk is full"
        assert lines[2].startswith(b"OK type=file size=3")  # the connection is still in step
        assert temporaries(self.root) == [] and not (self.root / "full.bin").exists()

    def test_a_file_that_appears_meanwhile_is_not_replaced(self) -> None:
        """PUT publishes with link: if the name appeared during the upload, it wins; ERR exists."""
        protocol, transport = connect(make(self.root))
        protocol.dataReceived(put_line("race", b"mine"))
        (self.root / "race").write_bytes(b"theirs")
        protocol.dataReceived(b"mine")
        assert transport.value().splitlines()[1].startswith(b"ERR exists the file appeared")
        assert (self.root / "race").read_bytes() == b"theirs" and temporaries(self.root) == []

    @cases(
        new=(b"MKDIR sub/new\n", b"OK created"),
        existing_directory=(b"MKDIR sub\n", b"OK exists"),
        existing_file=(b"MKDIR old.txt\n", b"ERR exists"),
        through_escaping_link=(b"MKDIR outside/x\n", b"ERR not-found"),
        missing_parent=(b"MKDIR nope/x\n", b"ERR not-found"),
        reserved_name=(b"MKDIR .tcpfiles-x\n", b"ERR bad-request"),
        dotdot=(b"MKDIR ../x\n", b"ERR bad-request"),
    )
    def test_mkdir(self, request_line, answer) -> None:
        """MKDIR creates one directory inside the root, and nothing anywhere else."""
        protocol, transport = connect(make(self.root))
        protocol.dataReceived(request_line)
        assert transport.value().startswith(answer)

    @cases(
        through_escaping_link=("outside/x",),
        dotdot=("../x",),
        reserved_name=(".tcpfiles-x.part",),
        reserved_name_in_sub=("sub/.tcpfiles-y",),
        missing_parent=("missing/x",),
        onto_a_directory=("sub",),
    )
    def test_upload_paths_are_confined(self, path) -> None:
        """Uploads through escaping links, to reserved names, or onto a directory are refused."""
        protocol, transport = connect(make(self.root))
        protocol.dataReceived(put_line(path, b"x", "REPLACE"))
        assert transport.value().startswith(b"ERR ")
        assert not list(self.root.parent.glob("x")) and temporaries(self.root) == []

    def test_stale_temporaries_are_removed(self) -> None:
        """Temporaries left by a server that died are removed at start; nothing else is."""
        (self.root / "sub" / ".tcpfiles-0123456789abcdef.part").write_bytes(b"junk")
        (self.root / ".tcpfiles-notes").write_bytes(b"not ours: no .part")
        removed = remove_stale_temporaries(Root.at(str(self.root)))
        assert [os.path.basename(p) for p in removed] == [".tcpfiles-0123456789abcdef.part"]
        assert (self.root / ".tcpfiles-notes").exists() and (self.root / "old.txt").exists()

    def test_a_live_temporary_survives_the_sweep(self) -> None:
        """An upload in flight in this process keeps its temporary through a sweep (as a second
        process's start does it), and then publishes; an aborted one leaves nothing."""
        body = b"x" * 100
        protocol, transport = connect(make(self.root))
        protocol.dataReceived(put_line("kept.txt", body) + body[:10])
        assert len(temporaries(self.root)) == 1
        assert remove_stale_temporaries(Root.at(str(self.root))) == []
        protocol.dataReceived(body[10:])
        assert transport.value().startswith(b"OK "), transport.value()
        assert (self.root / "kept.txt").read_bytes() == body
        assert temporaries(self.root) == []

    def test_another_process_lock_is_respected_and_a_dead_one_swept(self) -> None:
        """A temporary that another process holds locked survives the sweep; once that process
        has died (its lock gone with it), the next sweep removes it."""
        path = self.root / ".tcpfiles-00112233445566778.part"
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import fcntl, os, sys\n"
                f"fd = os.open({str(path)!r}, os.O_WRONLY | os.O_CREAT | os.O_EXCL)\n"
                "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                "print('locked', flush=True)\n"
                "sys.stdin.read()\n",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(lambda: holder.poll() is None and holder.kill())
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert remove_stale_temporaries(Root.at(str(self.root))) == []
        assert path.exists()
        holder.kill()  # dies holding it: the kernel drops the lock
        holder.wait(timeout=20)
        assert remove_stale_temporaries(Root.at(str(self.root))) == [str(path)]
        assert not path.exists()
