"""The files service through a real twistd on loopback, over real sockets."""

from __future__ import annotations

import concurrent.futures
import hashlib
import signal
import socket
import subprocess
from pathlib import Path

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Wire, make_file, proc_io, script, twistd_command, wait_until


def start_stuck_download(root, start_server, *options: str):
    """A server with a 64 MiB download in flight that nobody reads, just sent SIGTERM."""
    make_file(root / "big.bin", 64 << 20)
    server = start_server(*options)
    wire = Wire(server.port)
    wire.send(b"GET big.bin\n")
    assert wire.line() == b"OK 67108864"
    server.proc.send_signal(signal.SIGTERM)
    return server, wire


class FilesTests(E2ETestCase):
    """The files service through a real twistd on loopback."""

    def test_plugin_is_listed_by_twistd(self) -> None:
        """`twistd --help` lists the tcpfiles plugin once tcpfiles is installed."""
        out = subprocess.run(
            [script("twistd"), "--help"], capture_output=True, text=True, timeout=60
        )
        assert "tcpfiles" in out.stdout

    def test_bad_root_is_an_error_before_listening(self) -> None:
        """A missing --root makes twistd exit 1 with a clear message and no listener."""
        out = subprocess.run(
            twistd_command(self.tmp_path / "nope"),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.tmp_path,
        )
        assert out.returncode == 1
        assert "does not exist or is not a directory" in out.stdout + out.stderr
        assert "listening" not in out.stdout

    def test_port_in_use_is_fatal(self) -> None:
        """A listen failure ends twistd with a non-zero status instead of running deaf."""
        first = self.start_server()
        out = subprocess.run(
            twistd_command(self.root, f"tcp:{first.port}:interface=127.0.0.1"),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.root.parent,
        )
        assert out.returncode != 0
        assert "Address already in use" in out.stdout + out.stderr

    def test_netcat_style_session(self) -> None:
        """A person typing GET/LIST/STAT/HELP/QUIT by hand gets what docs/protocol.md shows."""
        (self.root / "notes.txt").write_bytes(b"hello\n")
        wire = Wire(self.start_server().port)
        assert wire.get("notes.txt") == b"hello\n"
        wire.send(b"STAT notes.txt\r\n")
        status = wire.line()
        assert status.startswith(b"OK type=file size=6 mtime=")
        assert status.endswith(b"sha256=" + hashlib.sha256(b"hello\n").hexdigest().encode())
        wire.send(b"GET missing.txt\n")
        assert wire.line() == b"ERR not-found no such file or directory: missing.txt"
        wire.send(b"QUIT\n")
        assert wire.line() == b"OK bye"
        assert wire.at_eof()

    def test_pipelined_requests_are_answered_in_order(self) -> None:
        """Many requests in one send come back in order, bodies intact."""
        shas = {
            name: make_file(self.root / name, size, seed)
            for seed, (name, size) in enumerate([("a.bin", 3 << 20), ("b.bin", 1), ("c", 0)])
        }
        wire = Wire(self.start_server().port)
        wire.send(
            b"GET a.bin\nGET nope\nGET b.bin\nLIST\nGET c\nSTAT a.bin\nRESUME 1048576 a.bin\n"
        )
        assert wire.line() == b"OK 3145728"
        assert wire.sha256_of_next(3 << 20) == shas["a.bin"]
        assert wire.line().startswith(b"ERR not-found")
        assert wire.line() == b"OK 1"
        wire.exactly(1)
        assert wire.line() == b"OK list"
        names = [wire.line().split(b" ", 3)[3] for _ in range(3)]
        assert sorted(names) == [b"a.bin", b"b.bin", b"c"]  # directory order, not sorted
        assert wire.line() == b"END 3"
        assert wire.line() == b"OK 0"
        assert wire.line().endswith(shas["a.bin"].encode())
        assert wire.line() == b"OK 2097152"
        assert len(wire.exactly(2 << 20)) == 2 << 20

    def test_fifty_clients_at_once(self) -> None:
        """50 clients connected together each get a whole, correct file."""
        sha = make_file(self.root / "one.bin", 1 << 20)
        server = self.start_server()
        wires = [Wire(server.port) for _ in range(50)]  # all connected before any request

        def fetch(wire: Wire) -> str:
            wire.send(b"GET one.bin\n")
            assert wire.line() == b"OK 1048576"
            digest = wire.sha256_of_next(1 << 20)
            wire.close()
            return digest

        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            assert list(pool.map(fetch, wires, timeout=60)) == [sha] * 50

    def test_reader_that_stops_reading_costs_bounded_memory(self) -> None:
        """A client holding a 128 MiB download without reading grows server RSS by < 32 MiB."""
        sha = make_file(self.root / "big.bin", 128 << 20)
        server = self.start_server()
        wire = Wire(server.port)
        wire.send(b"GET ping-does-not-exist\n")
        wire.line()  # the server is warmed up: its first request is served
        baseline = server.rss_kib()
        wire.send(b"GET big.bin\n")
        assert wire.line() == b"OK 134217728"
        # No event says "the server stopped writing": watch its write counter settle, bounded.
        samples = []

        def settled() -> bool:
            samples.append(proc_io(server.proc.pid))
            return len(samples) > 25 and samples[-1] == samples[-25]

        wait_until(settled, timeout=20, what="the server to stop writing to a full socket")
        held = server.rss_kib("VmHWM") - baseline
        assert held < 32 * 1024, f"server RSS grew by {held} KiB"
        assert wire.sha256_of_next(128 << 20) == sha  # and the whole file still arrives
        assert server.rss_kib("VmHWM") - baseline < 32 * 1024

    def test_sigterm_lets_a_transfer_finish_and_refuses_new_connections(self) -> None:
        """SIGTERM mid-download: listener closes at once, the download completes, exit is clean."""
        sha = make_file(self.root / "big.bin", 64 << 20)
        server = self.start_server()
        wire = Wire(server.port)
        wire.send(b"GET big.bin\n")
        assert wire.line() == b"OK 67108864"
        first = wire.exactly(1 << 20)
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(r"files stopped listening")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5)
        digest = hashlib.sha256(first)
        rest = wire.exactly((64 << 20) - (1 << 20))
        digest.update(rest)
        assert digest.hexdigest() == sha
        assert wire.at_eof()  # closed after the transfer, not during it
        code = server.stop()
        assert code in (0, -signal.SIGTERM), server.text()
        assert "Server Shut Down" in server.text()
        assert "GET big.bin -> OK 67108864 bytes" in server.text()

    def test_grace_period_ends_a_stuck_transfer(self) -> None:
        """A transfer that cannot finish within --grace is dropped and twistd still exits."""
        server, _wire = start_stuck_download(self.root, self.start_server, "--grace", "1")
        server.wait_for(r"grace period over: dropping 1 connection")
        assert server.stop() in (0, -signal.SIGTERM)
        assert "aborted: connection lost" in server.text()

    def test_connection_limit_per_peer(self) -> None:
        """Past --max-per-peer, a new connection gets ERR busy and is closed."""
        server = self.start_server("--max-per-peer", "2")
        first, second = Wire(server.port), Wire(server.port)
        first.send(b"STAT /\n")
        assert first.line().startswith(b"OK type=dir")
        third = Wire(server.port)
        assert third.line().startswith(b"ERR busy too many connections from your address")
        assert third.at_eof()
        second.close()
        server.wait_for(r"refused 127\.0\.0\.1")
        first.send(b"STAT /\n")
        assert first.line().startswith(b"OK type=dir")

    def test_line_too_long_closes(self) -> None:
        """A request line over 8 KiB gets ERR too-long and the connection closes."""
        wire = Wire(self.start_server().port)
        wire.send(b"GET " + b"a" * 9000)
        assert wire.line().startswith(b"ERR too-long")
        assert wire.at_eof()

    def test_random_bytes_never_crash_the_server(self) -> None:
        """Garbage gets clean errors; the server keeps serving and logs no traceback."""
        (self.root / "ok.txt").write_bytes(b"fine")
        server = self.start_server()
        for seed in range(20):
            wire = Wire(server.port)
            wire.send(hashlib.sha512(str(seed).encode()).digest() * 64 + b"\nQUIT\n")
            lines = []
            while not wire.at_eof():
                lines.append(wire.line())
            assert lines[-1] == b"OK bye"
            assert all(line.startswith(b"ERR bad-request") for line in lines[:-1]), lines
            wire.close()
        assert Wire(server.port).get("ok.txt") == b"fine"

    def test_log_has_one_event_per_request(self) -> None:
        """Each request is logged once with peer, request, outcome, bytes and seconds."""
        (self.root / "a.txt").write_bytes(b"12345")
        server = self.start_server()
        wire = Wire(server.port)
        wire.get("a.txt")
        wire.send(b"GET nope\n")
        wire.line()
        server.wait_for(r"127\.0\.0\.1:\d+ GET a\.txt -> OK 5 bytes in \d+\.\d{3}s")
        server.wait_for(r"127\.0\.0\.1:\d+ GET nope -> ERR not-found \d+ bytes in")

    def test_twistd_daemon_pidfile_and_logfile(self) -> None:
        """Without -n, twistd daemonizes with our plugin, writes its pidfile and logfile."""
        (self.root / "a.txt").write_bytes(b"daemon")
        pidfile, logfile = self.tmp_path / "t.pid", self.tmp_path / "t.log"
        subprocess.run(
            [
                script("twistd"),
                f"--pidfile={pidfile}",
                f"--logfile={logfile}",
                "tcpfiles",
                "--root",
                str(self.root),
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ],
            check=True,
            timeout=60,
            cwd=self.tmp_path,
        )
        wait_until(pidfile.exists, 20, "the pidfile")
        pid = int(pidfile.read_text())
        try:
            wait_until(lambda: "files listening on" in logfile.read_text(), 20, "the listen line")
            port = int(logfile.read_text().split("files listening on 127.0.0.1:")[1].split()[0])
            assert Wire(port).get("a.txt") == b"daemon"
        finally:
            import os

            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pidfile.exists(), 30, "the daemon to exit and remove its pidfile")

    def test_embedding_example_from_readme(self) -> None:
        """The README's embedding example runs as shown and serves files."""
        readme = (Path(__file__).parents[2] / "README.md").read_text()
        code = readme.split("<!-- embed-example -->\n```python\n")[1].split("```")[0]
        code = code.replace('"tcp:8888"', '"tcp:0:interface=127.0.0.1"')
        (self.tmp_path / "files").mkdir()
        (self.tmp_path / "files" / "hi.txt").write_bytes(b"embedded")
        (self.tmp_path / "example.py").write_text(code)
        import sys

        proc = subprocess.Popen(
            [sys.executable, "example.py"], cwd=self.tmp_path, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("serving files on port "), line
            port = int(line.split()[-1])
            assert Wire(port).get("hi.txt") == b"embedded"
        finally:
            proc.terminate()
            proc.wait(timeout=20)

    def test_half_closed_client_gets_the_whole_file(self) -> None:
        """`printf 'GET x\\n' | nc -N host port`: the client half-closes, and still gets every
        byte."""
        sha = make_file(self.root / "big.bin", 8 << 20)
        wire = Wire(self.start_server().port)
        wire.send(b"GET big.bin\nSTAT big.bin\n")
        wire.sock.shutdown(socket.SHUT_WR)
        assert wire.line() == b"OK 8388608"
        assert wire.sha256_of_next(8 << 20) == sha
        assert wire.line().endswith(sha.encode())
        assert wire.at_eof()

    def test_second_signal_stops_at_once(self) -> None:
        """A second SIGTERM during the grace period drops what is left now, without a traceback."""
        server, _wire = start_stuck_download(self.root, self.start_server, "--grace", "600")
        server.wait_for(r"waiting up to 600 s for 1 connection")
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(r"SIGTERM again: dropping 1 connection")
        assert server.stop(timeout=20) in (0, -signal.SIGTERM)
        assert "aborted: connection lost" in server.text()
