"""Hashing through a real twistd: keyed by file identity, bounded, abandoned at shutdown.

The files are sparse (``truncate``): hashing reads zeros, costing CPU but no disk.  Figures are
printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import signal
import socket
import time
from pathlib import Path

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Wire, wait_until

BIG = 1 << 30  # 1 GiB: about 2.5 CPU-s to read (sparse: the kernel zeroes pages) and hash here
SPELLINGS = 20


def sparse(path: Path, size: int = BIG) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hash_here(path: Path) -> tuple[float, str]:
    """Hash a file the way the server does (pread by MiB): the CPU seconds it took, the digest."""
    started, digest, offset = time.process_time(), hashlib.sha256(), 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while chunk := os.pread(fd, 1 << 20, offset):
            digest.update(chunk)
            offset += len(chunk)
    finally:
        os.close(fd)
    return time.process_time() - started, digest.hexdigest()


def wire_from(port: int, source: str) -> Wire:
    """A Wire whose socket comes from another loopback address (a separate client)."""
    wire = Wire.__new__(Wire)
    wire.sock = socket.create_connection(
        ("127.0.0.1", port), timeout=30, source_address=(source, 0)
    )
    wire.buffer = b""
    return wire


def timed(wire: Wire, request: bytes) -> tuple[bytes, float]:
    started = time.monotonic()
    wire.send(request)
    return wire.line(), time.monotonic() - started


def spelling(levels: int) -> str:
    return "dotlink/" * levels + "big"


def start_hashing(root: Path, server, files: int = 8, sources: int = 4) -> list[Wire]:
    """STAT ``files`` distinct 2 GiB files from ``sources`` loopback addresses; hashing underway."""
    wires = []
    for i in range(files):
        sparse(root / f"big{i}", 2 * BIG)  # far more work than --grace 3 leaves time for
        wire = wire_from(server.port, f"127.0.0.{1 + i % sources}")
        wire.send(f"STAT big{i}\n".encode())
        wires.append(wire)
    before = cpu_seconds(server.proc.pid)
    wait_until(lambda: cpu_seconds(server.proc.pid) - before > 0.5, 30, "hashing to start")
    return wires


def unanswered(wires: list[Wire]) -> int:
    """How many STATs ended without an OK (hash abandoned: ERR or the connection dropped)."""
    count = 0
    for wire in wires:
        try:
            count += not wire.line().startswith(b"OK ")
        except (EOFError, ConnectionError):
            count += 1
    return count


class HashingTests(E2ETestCase):
    """Hashing through a real twistd."""

    def test_twenty_spellings_of_one_file_hash_it_once(self) -> None:
        """20 STATs via dotlink/…/big cost one hash; a small STAT and a PUT meanwhile take < 1 s."""
        sparse(self.root / "big")
        os.symlink(".", self.root / "dotlink")
        (self.root / "small").write_bytes(b"x")
        one_hash, expected = hash_here(self.root / "big")  # cold: the slowest a hash gets here
        server = self.start_server("--writable")
        before = cpu_seconds(server.proc.pid)
        started = time.monotonic()
        wires = [Wire(server.port, timeout=120) for _ in range(SPELLINGS)]
        for levels, wire in enumerate(wires, 1):
            wire.send(f"STAT {spelling(levels)}\n".encode())
        body = b"hello, world\n"
        put = f"PUT {len(body)} {hashlib.sha256(body).hexdigest()} new.txt\n".encode()
        probes = [Wire(server.port, timeout=120) for _ in range(2)]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:  # both at once, while hashing
            stat_probe = pool.submit(timed, probes[0], b"STAT small\n")
            put_probe = pool.submit(timed, probes[1], put + body)
            (small, stat_seconds), (stored, put_seconds) = stat_probe.result(), put_probe.result()
        answers = {wire.line() for wire in wires}
        elapsed = time.monotonic() - started
        used = cpu_seconds(server.proc.pid) - before

        print(
            f"\n20 spellings: {elapsed:.2f} s, server CPU {used:.2f} s (one local hash "
            f"{one_hash:.2f} s); probe STAT {stat_seconds:.3f} s, PUT {put_seconds:.3f} s"
        )
        assert len(answers) == 1 and answers.pop().endswith(expected.encode())
        assert small.endswith(hashlib.sha256(b"x").hexdigest().encode()) and stat_seconds < 1.0
        assert stored.startswith(b"OK ") and put_seconds < 1.0
        assert used < 2 * one_hash + 1, "the file was hashed more than once"

    def test_grace_period_abandons_queued_hashes(self) -> None:
        """SIGTERM with --grace 3 while 8 large files are being hashed: exit within 5 s."""
        server = self.start_server("--grace", "3")
        wires = start_hashing(self.root, server)
        started = time.monotonic()
        server.stop(timeout=60)
        took = time.monotonic() - started
        dropped = unanswered(wires)
        print(
            f"\n--grace 3 with 8 hashes of 2 GiB queued: exited in {took:.2f} s, {dropped} dropped"
        )
        assert took < 5.0
        assert dropped > 0, "every hash finished: the test did not queue enough work"

    def test_second_signal_abandons_hashes_at_once(self) -> None:
        """SIGTERM, then SIGTERM again with --grace 600 while hashing: exit within 2 s."""
        server = self.start_server("--grace", "600")
        wires = start_hashing(self.root, server)
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(r"signal again to stop now")
        started = time.monotonic()
        server.stop(timeout=60)
        took = time.monotonic() - started
        dropped = unanswered(wires)
        print(f"\nsecond SIGTERM with 8 hashes of 2 GiB queued: exited in {took:.2f} s")
        assert took < 2.0
        assert dropped > 0, "every hash finished: the test did not queue enough work"
