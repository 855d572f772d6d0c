"""``twistd tcpfiles --workers 2`` for real: connections spread over both workers, a worker
killed with SIGKILL refuses no connection and is replaced, and SIGTERM lets a slow download
finish before every process exits."""

from __future__ import annotations

import collections
import hashlib
import os
import re
import signal
import socket
import ssl
import threading

from tests.e2e.cases import E2ETestCase
from tests.e2e.certs import make_ca, make_server_cert
from tests.e2e.harness import Twistd, Wire, make_file, wait_until

#: A request line a worker logged: ``[worker 2 tcpfiles.files#info] 127.0.0.1:N GET a -> OK``.
SERVED = r"\[worker (\d+) tcpfiles\.files#info\] .* GET "


def started(server: Twistd, index: int, after: int = 0) -> int:
    """The pid of worker ``index`` from the parent's latest ``started worker`` line, waiting
    for a line with another pid than ``after``."""
    pattern = rf"started worker {index} \(pid (\d+)\)"
    for _ in range(2):
        pids = [int(m.group(1)) for line in server.log if (m := re.search(pattern, line))]
        if pids and pids[-1] != after:
            return pids[-1]
        server.wait_count(pattern, len(pids) + 1)
    raise AssertionError(f"worker {index} was not started again:\n{server.text()}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class WorkersTests(E2ETestCase):
    def start(self, *extra: str) -> Twistd:
        server = self.start_server("--workers", "2", *extra)
        for index in (1, 2):  # both adopted the socket
            server.wait_for(rf"\[worker {index} tcpfiles\.core\.service#info\] files listening")
        return server

    def test_connections_spread_over_both_workers(self) -> None:
        """200 GETs, each on a new connection, from 4 clients at once: both workers answer
        some. (Which worker takes a connection is the kernel's choice: one client alone,
        one connection at a time, may find the same worker first every time on a busy machine;
        bench/workers.py measures the spread.)"""
        (self.root / "a.txt").write_bytes(b"hello\n")
        server = self.start()
        answers: list[bytes] = []

        def client() -> None:
            for _ in range(50):
                wire = Wire(server.port)
                answers.append(wire.get("a.txt"))
                wire.close()

        threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertEqual(answers, [b"hello\n"] * 200)
        server.wait_count(SERVED, 200)
        counts = collections.Counter(
            m.group(1) for line in server.log if (m := re.search(SERVED, line))
        )
        self.assertEqual(sum(counts.values()), 200)
        self.assertEqual(sorted(counts), ["1", "2"], counts)

    def test_a_killed_worker_refuses_nothing_and_is_replaced(self) -> None:
        """SIGKILL to worker 1 while a client connects again and again: not one connection is
        refused (the socket's queue is the parent's); the one in flight in the killed worker
        may be lost; the parent logs the death and starts worker 1 again."""
        (self.root / "a.txt").write_bytes(b"hello\n")
        server = self.start()
        victim = started(server, 1)
        outcomes: collections.Counter[str] = collections.Counter()
        stop = threading.Event()

        def client() -> None:
            for _ in range(3000):
                if stop.is_set():
                    return
                try:
                    wire = Wire(server.port, timeout=10)
                    try:
                        outcomes["ok" if wire.get("a.txt") == b"hello\n" else "wrong"] += 1
                    finally:
                        wire.close()
                except ConnectionRefusedError:
                    outcomes["refused"] += 1
                except (OSError, EOFError, AssertionError):
                    outcomes["lost"] += 1

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        wait_until(lambda: outcomes["ok"] >= 50, 30, "50 GETs before the kill")
        os.kill(victim, signal.SIGKILL)
        server.wait_for(rf"worker 1 \(pid {victim}\) was killed by SIGKILL after .* starting")
        replacement = started(server, 1, after=victim)
        server.wait_count(r"\[worker 1 tcpfiles\.core\.service#info\] files listening", 2)
        served_before = outcomes["ok"]
        wait_until(lambda: outcomes["ok"] >= served_before + 50, 30, "50 GETs after")
        stop.set()
        thread.join(timeout=30)
        self.assertNotEqual(replacement, victim)
        self.assertTrue(alive(replacement))
        self.assertEqual((outcomes["refused"], outcomes["wrong"]), (0, 0), outcomes)
        self.assertLessEqual(outcomes["lost"], 5, outcomes)

    def test_sigterm_lets_a_slow_download_finish_then_every_process_exits(self) -> None:
        """A download in flight when the parent gets SIGTERM completes; the workers stop, then
        the parent, with twistd's clean status; no worker is left."""
        digest = make_file(self.root / "big.bin", 32 << 20)
        server = self.start()
        pids = [started(server, 1), started(server, 2)]
        wire = Wire(server.port, timeout=30)
        wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        wire.send(b"GET big.bin\n")
        status = wire.line()
        self.assertEqual(status.split()[:2], [b"OK", str(32 << 20).encode()])
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(r"stopping 2 worker\(s\); they have 30 s to finish")
        server.wait_for(r"\[worker \d tcpfiles\.core\.service#info\] waiting up to 30 s for 1")
        self.assertEqual(wire.sha256_of_next(32 << 20), digest)
        wire.close()
        self.assertIn(server.stop(timeout=30), (0, -signal.SIGTERM))
        self.assertRegex(server.text(), r"worker 1 \(pid \d+\) stopped")
        self.assertRegex(server.text(), r"worker 2 \(pid \d+\) stopped")
        wait_until(lambda: not any(alive(pid) for pid in pids), 10, "the workers gone")


class WorkersTLSTests(E2ETestCase):
    def test_tls_is_served_by_the_workers(self) -> None:
        """An ssl: endpoint: the parent binds the TCP port, each worker wraps what it accepts
        in TLS; several connections verify the certificate and get the file."""
        (self.root / "a.txt").write_bytes(b"hello\n")
        ca = make_ca(self.tmp_path)
        pair = make_server_cert(self.tmp_path, ca)
        server = self.start_server(
            "--workers",
            "2",
            listen=f"ssl:0:interface=127.0.0.1:certKey={pair.cert}:privateKey={pair.key}",
        )
        self.assertRegex(server.text(), r"files listening on 127\.0\.0\.1:\d+ \(TLS\)")
        context = ssl.create_default_context(cafile=str(ca[0].cert))
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"GET a.txt\n")
                    data = b""
                    while len(data) < len(b"OK 6\nhello\n"):
                        data += tls.recv(1024)
            self.assertEqual(data, b"OK 6\nhello\n")
        server.wait_count(SERVED, 10)
        self.assertRegex(
            server.text(), r"\[worker \d tcpfiles\.core\.service#info\] files listening .*\(TLS\)"
        )

    def test_a_haproxy_endpoint_is_served_by_the_workers(self) -> None:
        """haproxy:tcp: the parent binds the TCP port below the wrapper, the workers wrap what
        they accept in the PROXY protocol reader, as listening on the endpoint would."""
        (self.root / "a.txt").write_bytes(b"hello\n")
        server = self.start_server("--workers", "2", listen="haproxy:tcp:0:interface=127.0.0.1")
        for _ in range(4):
            wire = Wire(server.port)
            wire.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 80\r\n")
            self.assertEqual(wire.get("a.txt"), b"hello\n")
            wire.close()
        server.wait_count(SERVED, 4)


class TemporariesAcrossProcessesTests(E2ETestCase):
    def test_a_starting_server_leaves_a_live_upload_alone(self) -> None:
        """A second writable server starting on the same root sweeps stale temporaries: the
        first one's upload in flight keeps its temporary and is stored whole; a temporary that
        nobody holds (left by a process that died) is removed."""
        stale = self.root / ".tcpfiles-0011223344556677.part"
        stale.write_bytes(b"left by a crash")
        first = self.start_server("--writable")
        first.wait_for(r"removed a stale upload temporary")
        body = b"A" * 200_000
        digest = hashlib.sha256(body).hexdigest()
        wire = Wire(first.port)
        wire.send(f"PUT {len(body)} {digest} up.bin\n".encode())
        self.assertEqual(wire.line(), b"OK send 200000")
        wire.send(body[:100_000])
        stale.write_bytes(b"left by another crash")
        second = self.start_server("--writable")
        second.wait_for(r"removed a stale upload temporary: .*0011223344556677")
        self.assertNotRegex(
            second.text(), r"removed a stale upload temporary: .*\.tcpfiles-(?!0011)"
        )
        wire.send(body[100_000:])
        self.assertEqual(wire.line(), f"OK stored 200000 {digest}".encode())
        self.assertEqual((self.root / "up.bin").read_bytes(), body)
        wire.close()
