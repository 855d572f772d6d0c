"""The sendfile fast path, end to end: order, closes, vanishing clients, truncation, TLS."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import struct
import time

from tests.e2e.cases import E2ETestCase, cases, with_cases
from tests.e2e.certs import make_ca, make_server_cert
from tests.e2e.harness import Wire, make_file, wait_until


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@with_cases
class ZeroCopyTests(E2ETestCase):
    """The sendfile fast path and its fallbacks, end to end."""

    def test_status_line_then_body_then_next_answer(self) -> None:
        """After a sendfile body, the next pipelined answers come in order, whole."""
        shas = [
            make_file(self.root / f"f{n}.bin", size, n)
            for n, size in enumerate([(8 << 20) + 3, 1, 5 << 20])
        ]
        wire = Wire(self.start_server().port)
        wire.send(b"GET f0.bin\nSTAT f1.bin\nGET f2.bin\nGET f1.bin\n")
        assert wire.line() == f"OK {(8 << 20) + 3}".encode()
        assert wire.sha256_of_next((8 << 20) + 3) == shas[0]
        assert wire.line().endswith(shas[1].encode())
        assert wire.line() == f"OK {5 << 20}".encode()
        assert wire.sha256_of_next(5 << 20) == shas[2]
        assert wire.line() == b"OK 1" and len(wire.exactly(1)) == 1

    def test_close_right_after_the_request_still_delivers_everything(self) -> None:
        """QUIT (close) or a half-close right behind a GET: the whole body arrives first."""
        sha = make_file(self.root / "big.bin", 16 << 20)
        server = self.start_server()
        for ending in (b"QUIT\n", None):
            wire = Wire(server.port)
            wire.send(b"GET big.bin\n" + (ending or b""))
            if ending is None:
                wire.sock.shutdown(socket.SHUT_WR)
            assert wire.line() == f"OK {16 << 20}".encode()
            assert wire.sha256_of_next(16 << 20) == sha
            if ending:
                assert wire.line() == b"OK bye"
            assert wire.at_eof()

    def test_vanishing_clients_leave_nothing_behind(self) -> None:
        """30 clients drop mid-download (15 with FIN, 15 with RST): fds and memory return."""
        make_file(self.root / "big.bin", 64 << 20)
        server = self.start_server()
        warm = Wire(server.port)  # the first request loads what the server loads lazily
        warm.send(b"STAT big.bin\n")
        warm.line()
        warm.send(b"QUIT\n")
        assert warm.line() == b"OK bye" and warm.at_eof()
        server.wait_for(r"QUIT -> OK")
        fds, rss = open_fds(server.proc.pid), server.rss_kib()
        for n in range(30):
            wire = Wire(server.port)
            wire.send(b"GET big.bin\n")
            assert wire.line() == f"OK {64 << 20}".encode()
            wire.exactly(1 << 20)
            if n % 2:  # RST instead of FIN
                wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            wire.close()
        server.wait_count(r"GET big\.bin -> aborted: connection lost", 30)
        wait_until(lambda: open_fds(server.proc.pid) <= fds, 10, "file descriptors to be released")
        assert server.rss_kib() - rss < 8 * 1024

    def test_file_truncated_during_sendfile_ends_the_connection(self) -> None:
        """A file cut short while it is sent: the connection ends, nothing pretends to be whole."""
        make_file(self.root / "big.bin", 64 << 20)
        server = self.start_server()
        wire = Wire(server.port)
        wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        wire.send(b"GET big.bin\n")
        assert wire.line() == f"OK {64 << 20}".encode()
        wire.exactly(1 << 20)
        os.truncate(self.root / "big.bin", 2 << 20)
        received = (1 << 20) + len(wire.buffer)
        wire.buffer = b""
        try:
            while chunk := wire.sock.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < 64 << 20
        server.wait_for(r"GET big\.bin -> aborted: (file shrank|connection lost)")

    def test_tls_bodies_take_the_copying_path_and_are_correct(self) -> None:
        """Over TLS (no sendfile possible) a large body arrives byte-exact, then the next answer."""
        sha = make_file(self.root / "big.bin", (12 << 20) + 7)
        ca = make_ca(self.tmp_path)
        pair = make_server_cert(self.tmp_path, ca)
        server = self.start_server(
            listen=f"ssl:0:interface=127.0.0.1:certKey={pair.cert}:privateKey={pair.key}"
        )
        context = ssl.create_default_context(cafile=str(ca[0].cert))
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET big.bin\nHELP\n")
                data = b""
                while len(data) < len(f"OK {(12 << 20) + 7}\n") + (12 << 20) + 7 + 5:
                    data += tls.recv(1 << 20)
        head, _, rest = data.partition(b"\n")
        assert head == f"OK {(12 << 20) + 7}".encode()
        assert hashlib.sha256(rest[: (12 << 20) + 7]).hexdigest() == sha
        assert rest[(12 << 20) + 7 :].startswith(b"OK 11")

    def test_a_stuck_reader_does_not_hold_up_others(self) -> None:
        """One client stops reading a big download; others are still answered at once."""
        make_file(self.root / "big.bin", 128 << 20)
        (self.root / "small.txt").write_bytes(b"quick")
        server = self.start_server()
        stuck = Wire(server.port)
        stuck.send(b"GET big.bin\n")
        assert stuck.line() == f"OK {128 << 20}".encode()
        worst = 0.0
        for _ in range(50):
            started = time.perf_counter()
            assert Wire(server.port).get("small.txt") == b"quick"
            worst = max(worst, time.perf_counter() - started)
        assert worst < 0.5, f"a request took {worst:.3f} s while another client was stuck"

    @cases(
        sendfile_get=("sendfile", b"GET small.bin\n"),
        no_sendfile_get=("--no-sendfile", b"GET small.bin\n"),
        tls_get=("tls", b"GET small.bin\n"),
        sendfile_help=("sendfile", b"HELP\n"),
        tls_help=("tls", b"HELP\n"),
    )
    def test_pipelined_requests_never_read_cost_bounded_memory(
        self, mode: str, request_line: bytes
    ) -> None:
        """20,000 pipelined GETs of a 200 KiB file (or HELPs), never read: the server stops
        reading instead of piling up 4 GB of answers (every answer waits until the transport can
        take more before the next request is taken; 20 MB of HELP lines once cost 2.9 GB)."""
        make_file(self.root / "small.bin", 200 * 1024)
        if mode == "tls":
            ca = make_ca(self.tmp_path)
            pair = make_server_cert(self.tmp_path, ca)
            server = self.start_server(
                listen=f"ssl:0:interface=127.0.0.1:certKey={pair.cert}:privateKey={pair.key}"
            )
            context = ssl.create_default_context(cafile=str(ca[0].cert))
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock = context.wrap_socket(raw, server_hostname="localhost")
        else:
            server = self.start_server(*(() if mode == "sendfile" else (mode,)))
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        baseline = server.rss_kib()
        batch = request_line * (14_000 // len(request_line))
        sent = 0
        try:
            for _ in range(1_500 if request_line == b"HELP\n" else 20):
                sock.sendall(batch)
                sent += len(batch)
        except TimeoutError:
            pass  # the server stopped reading: the requests back up into our socket
        samples: list[int] = []

        def settled() -> bool:
            samples.append(server.rss_kib())
            return len(samples) > 25 and samples[-1] == samples[-25]

        wait_until(settled, 20, "the server's memory to settle")
        grown = server.rss_kib("VmHWM") - baseline
        assert grown < 32 * 1024, f"server RSS grew by {grown} KiB for {sent} bytes of requests"
        sock.close()
