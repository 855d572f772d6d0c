"""LIST of a big directory through a real twistd: streamed, paced, capped (issue 10, item 3).

The directory of 200,000 empty files is made once for the module, on tmpfs when there is one
(``mknod`` there takes about 2-4 s on the development machine; ``open``/``close`` on a disk, up to
a minute under load) and removed at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Wire, script, serving

BIG = 200_000
PROBE_LIMIT = 0.100  # seconds: the worst GET of another client while the listings run
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


@pytest.fixture(scope="module")
def big_root() -> Iterator[Path]:
    """A served root with ``small.txt`` and ``big/`` holding 200,000 empty files."""
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    top = Path(tempfile.mkdtemp(prefix="tcpfiles-list-", dir=shm))
    try:
        served = top / "files"
        (served / "big").mkdir(parents=True)
        (served / "small.txt").write_bytes(b"s" * 100)
        started = time.monotonic()
        make_empty_files(served / "big", BIG)
        sys.stderr.write(f"\n{BIG} files made in {time.monotonic() - started:.1f} s in {top}\n")
        yield served
    finally:
        shutil.rmtree(top)


@pytest.fixture
def big_server(big_root: Path) -> Iterator[Any]:
    with serving(big_root) as start:
        yield start


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


def test_big_listing_with_twenty_non_readers(big_server):
    """LIST of 200,000 entries while 20 clients list and never read: another client's GETs stay
    under 100 ms and the server grows by less than 32 MiB."""
    server = big_server("--max-list", "250000")
    probe = Probe(server.port)
    probe.wire.get("small.txt")  # warmed up: the first request is served
    baseline = server.rss_kib()
    probe.start()
    idle = [non_reader(server.port) for _ in range(20)]
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


def test_default_cap_ends_the_listing_truncated(big_server):
    """With the default --max-list (100,000) the listing stops there with the documented line,
    and the connection goes on."""
    server = big_server()
    wire = Wire(server.port, timeout=60)
    wire.send(b"LIST big\nGET small.txt\n")
    assert read_listing(wire) == (100_000, b"END 100000 truncated")
    assert wire.line() == b"OK 100"
    server.wait_for(r"LIST big -> OK truncated at 100000 entries")


def tcpfiles(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [script("tcpfiles"), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_cli_reports_a_truncated_listing(root, start_server, tmp_path):
    """`tcpfiles ls` shows what came and exits 1 with a warning; `get -r` fetches what was
    listed, names the partial directory and exits 1: a truncated listing is never taken whole."""
    for name in ("a", "b", "c", "d", "e"):
        (root / "dir" / name).parent.mkdir(exist_ok=True)
        (root / "dir" / name).write_bytes(name.encode())
    port = start_server("--max-list", "3").port
    server = f"127.0.0.1:{port}"
    listed = tcpfiles("ls", "--server", server, "dir", cwd=tmp_path)
    assert listed.returncode == 1
    assert len(listed.stdout.splitlines()) == 3
    assert listed.stderr == (
        "tcpfiles: listing of dir stopped after 3 entries: the server lists at most that many "
        "(its --max-list) (truncated); not every entry is shown\n"
    )
    got = tcpfiles("get", "-r", "--server", server, "dir", cwd=tmp_path)
    assert got.returncode == 1
    assert len(list((tmp_path / "dir").iterdir())) == 3
    assert "listing of dir stopped after 3 entries" in got.stderr
