"""A real twistd out of file descriptors: ``ERR busy``, never not-found, and it recovers."""

from __future__ import annotations

import os
import socket

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Wire, wait_until

#: The server's descriptor limit (soft raised at start to the hard one: 64).
NOFILE = (40, 64)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class FdLimitTests(E2ETestCase):
    """A real twistd short of file descriptors."""

    def test_exhausted_descriptors_answer_busy_then_recover(self) -> None:
        """Idle connections from several addresses use up the descriptors: GET, STAT and LIST of
        existing files on an earlier connection answer ERR busy (no traceback, the connection kept);
        once the idle connections close, the same requests and new connections are served."""
        (self.root / "a.txt").write_bytes(b"alpha\n")
        (self.root / "sub").mkdir()
        (self.root / "sub" / "b.txt").write_bytes(b"beta\n")
        server = self.start_server(nofile=NOFILE)
        server.wait_for(r"raised the file descriptor limit from 40 to 64")
        server.wait_for(r"file descriptor limit \(64\) is below the 3168 that 1024 connections")
        early = Wire(server.port)
        # Served, without keeping a.txt open (a kept small file is read without a new
        # descriptor, and would be served even now: tests/files/test_filecache.py).
        early.send(b"STAT sub/b.txt\n")
        assert early.line().startswith(b"OK type=file size=5 ")
        baseline = open_fds(server.proc.pid)
        idle = []
        try:
            for i in range(NOFILE[1] + 16):  # more than the server can hold: bounded
                sock = socket.socket()
                sock.bind((f"127.0.0.{2 + i % 4}", 0))
                sock.connect(("127.0.0.1", server.port))
                idle.append(sock)
            # Twisted's accept() hit EMFILE: it closed the excess with its reserved descriptor.
            server.wait_for(r"EMFILE encountered")
            server.wait_for(r"Re-reserving EMFILE recovery file descriptor")
            for request, shown in [
                (b"GET a.txt\n", b"a.txt"),
                (b"RESUME 2 a.txt\n", b"a.txt"),
                (b"STAT sub/b.txt\n", b"sub/b.txt"),
                (b"LIST\n", b"/"),
                (b"LIST sub\n", b"sub"),
            ]:
                early.send(request)
                answer = early.line()
                assert answer.startswith(b"ERR busy "), answer
                assert answer.endswith(b": " + shown), answer
        finally:
            for sock in idle:
                sock.close()
        wait_until(
            lambda: open_fds(server.proc.pid) <= baseline + 2, 20, "the idle connections to close"
        )
        assert early.get("a.txt") == b"alpha\n"
        early.send(b"STAT sub/b.txt\nLIST\n")
        assert early.line().startswith(b"OK type=file size=5 ")
        assert early.line() == b"OK list"
        assert sorted(early.line().split(b" ", 3)[3] for _ in range(2)) == [b"a.txt", b"sub"]
        assert early.line() == b"END 2"
        late = Wire(server.port)
        assert late.get("sub/b.txt") == b"beta\n"
        assert server.proc.poll() is None
        server.assert_clean_log()
        assert "not-found" not in server.text()

    def test_enough_descriptors_no_warning(self) -> None:
        """A limit that fits --max-connections (10 * 3 + 32 + 64 kept open <= 128): no warning
        at start."""
        (self.root / "a.txt").write_bytes(b"alpha\n")
        server = self.start_server("--max-connections", "10", nofile=(128, 128))
        assert Wire(server.port).get("a.txt") == b"alpha\n"  # listening: the check has run
        assert "file descriptor limit" not in server.text()
