"""LIST of a big directory through a real twistd: streamed, paced, capped (issue 10, item 3).

The directory of 200,000 empty files is made once, by the first test that lists it, on tmpfs when
there is one (``mknod`` there takes about 2-4 s on the development machine; ``open``/``close`` on
a disk, up to a minute under load) and removed after the last.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Wire, script, serving

BIG = 200_000
#: Seconds: the worst GET of another client while the listings run.  Unloaded it is 13-31 ms;
#: before LIST streamed it was 29 s.  0.1 s failed on the 2-CPU machine shared with other test
#: runs (116-422 ms seen), so the bound keeps two orders of magnitude below the bug instead.
PROBE_LIMIT = 0.500
RSS_LIMIT_KIB = 32 * 1024


def make_empty_files(directory: Path, count: int) -> None:
    """``count`` empty files ``f000000``... in ``directory``, one syscall each where possible."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(count):
            name = f"f{i:06d}"
            try:
                os.mknod(name, stat.S_IFREG | 0o644, dir_fd=fd)
            except PermissionError:  # mknod of a regular file refused here: the long way
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


class BigRoot:
    """A served root with ``small.txt`` and ``big/`` holding 200,000 empty files, shared by the
    tests of a class: made for the first, removed once all have run (or at exit, when some were
    not selected)."""

    def __init__(self, users: type) -> None:
        self.users = users
        self.top: Path | None = None
        self.pending: set[str] = set()

    def take(self, case: SynchronousTestCase) -> Path:
        """The root, made if need be; released when ``case`` is done (register this before
        anything that must end first, like the servers of the root)."""
        if self.top is None:
            self.top = self._make()
            self.pending = {name for name in dir(self.users) if name.startswith("test")}
            atexit.register(self._remove)
        case.addCleanup(self._release, case._testMethodName)
        return self.top / "files"

    def _release(self, name: str) -> None:
        self.pending.discard(name)
        if not self.pending:
            self._remove()

    def _make(self) -> Path:
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        top = Path(tempfile.mkdtemp(prefix="tcpfiles-list-", dir=shm))
        try:
            served = top / "files"
            (served / "big").mkdir(parents=True)
            (served / "small.txt").write_bytes(b"s" * 100)
            started = time.monotonic()
            make_empty_files(served / "big", BIG)
        except BaseException:
            shutil.rmtree(top, True)
            raise
        sys.stderr.write(f"\n{BIG} files made in {time.monotonic() - started:.1f} s in {top}\n")
        return top

    def _remove(self) -> None:
        if self.top is not None:
            shutil.rmtree(self.top, True)
            self.top = None


class Probe(threading.Thread):
    """GETs a small file again and again on its own connection; keeps the worst latency."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.wire = Wire(port)
        self.worst = 0.0
        self.count = 0
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 60  # bounded in time and count whatever happens
        while not self.stop.is_set() and self.count < 500_000 and time.monotonic() < deadline:
            started = time.monotonic()
            assert self.wire.get("small.txt") == b"s" * 100
            self.worst = max(self.worst, time.monotonic() - started)
            self.count += 1


def non_reader(port: int) -> socket.socket:
    """A client that asks for the big listing and never reads, with a network's MSS and a small
    receive buffer.  On loopback (MSS 64 KiB) the kernel gives each connection ~4 MB of send
    buffer, so 20 of them would make the server read the directory ~11 times over before they
    are full (a minute of CPU here); with MSS 1460, as from across a network, ~220 KB each."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"LIST big\n")
    return sock


def read_listing(wire: Wire) -> tuple[int, bytes]:
    """Rows after ``OK list`` up to the END line: (rows, END line)."""
    assert wire.line() == b"OK list"
    rows = 0
    while not (line := wire.line()).startswith(b"END"):
        assert line[:2] in (b"f ", b"d "), line
        rows += 1
    return rows, line


def tcpfiles(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [script("tcpfiles"), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


class BigListingTests(SynchronousTestCase):
    """LIST of a directory of 200,000 entries, streamed, paced and capped."""

    def setUp(self) -> None:
        super().setUp()
        self.big_server = self.enterContext(serving(BIG_ROOT.take(self)))

    def test_big_listing_with_twenty_non_readers(self) -> None:
        """LIST of 200,000 entries while 20 clients list and never read: another client's GETs stay
        under 100 ms and the server grows by less than 32 MiB."""
        server = self.big_server("--max-list", "250000")
        probe = Probe(server.port)
        probe.wire.get("small.txt")  # warmed up: the first request is served
        baseline = server.rss_kib()
        probe.start()
        idle = [non_reader(server.port) for _ in range(20)]
        for sock in idle:  # closed before the server stops, even when an assertion fails
            self.addCleanup(sock.close)
        reader = Wire(server.port, timeout=60)
        started = time.monotonic()
        reader.send(b"LIST big\n")
        rows, end = read_listing(reader)
        took = time.monotonic() - started
        probe.stop.set()
        probe.join(30)
        held = server.rss_kib("VmHWM") - baseline
        sys.stderr.write(
            f"listing {rows} rows in {took:.1f} s; {probe.count} probe GETs, worst "
            f"{probe.worst * 1000:.1f} ms; server RSS peak +{held / 1024:.1f} MiB\n"
        )
        assert (rows, end) == (BIG, b"END 200000")
        assert probe.count > 10
        assert probe.worst < PROBE_LIMIT, f"a GET waited {probe.worst * 1000:.0f} ms"
        assert held < RSS_LIMIT_KIB, f"server RSS grew by {held} KiB"
        # The non-readers got no more than their sockets hold: their connections are still open.
        for sock in idle:
            sock.close()
        assert probe.wire.get("small.txt") == b"s" * 100

    def test_default_cap_ends_the_listing_truncated(self) -> None:
        """With the default --max-list (100,000) the listing stops there with the documented line,
        and the connection goes on."""
        server = self.big_server()
        wire = Wire(server.port, timeout=60)
        wire.send(b"LIST big\nGET small.txt\n")
        assert read_listing(wire) == (100_000, b"END 100000 truncated")
        assert wire.line() == b"OK 100"
        server.wait_for(r"LIST big -> OK truncated at 100000 entries")


BIG_ROOT = BigRoot(BigListingTests)


class TruncatedListingCliTests(E2ETestCase):
    """The CLI never takes a truncated listing for a whole one."""

    def test_cli_reports_a_truncated_listing(self) -> None:
        """`tcpfiles ls` shows what came and exits 1 with a warning; `get -r` fetches what was
        listed, names the partial directory and exits 1: a truncated listing is never taken
        whole."""
        for name in ("a", "b", "c", "d", "e"):
            (self.root / "dir" / name).parent.mkdir(exist_ok=True)
            (self.root / "dir" / name).write_bytes(name.encode())
        port = self.start_server("--max-list", "3").port
        server = f"127.0.0.1:{port}"
        listed = tcpfiles("ls", "--server", server, "dir", cwd=self.tmp_path)
        assert listed.returncode == 1
        assert len(listed.stdout.splitlines()) == 3
        assert listed.stderr == (
            "tcpfiles: listing of dir stopped after 3 entries: the server lists at most that many "
            "(its --max-list) (truncated); not every entry is shown\n"
        )
        got = tcpfiles("get", "-r", "--server", server, "dir", cwd=self.tmp_path)
        assert got.returncode == 1
        assert len(list((self.tmp_path / "dir").iterdir())) == 3
        assert "listing of dir stopped after 3 entries" in got.stderr
