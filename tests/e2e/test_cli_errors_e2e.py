"""The CLI and twistd never mislead: interrupts, wrong servers, bad values, one-line failures."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from functools import cached_property
from pathlib import Path

from tests.e2e.cases import E2ETestCase, cases, with_cases
from tests.e2e.certs import Pair, make_ca, make_server_cert
from tests.e2e.faultproxy import FaultProxy
from tests.e2e.harness import make_file, run_cli, script, twistd_command, wait_until


def tcpfiles(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd)


def _interrupt_when(
    proc: subprocess.Popen[str], ready, sig: int = signal.SIGINT
) -> tuple[int, str]:
    """Signal ``proc`` (SIGINT) once ``ready()`` holds; its exit status and stderr."""
    wait_until(ready, 60, "the transfer to be under way")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


def _twistd(root: Path, listen: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*twistd_command(root, listen, *options)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root.parent,
        stdin=subprocess.DEVNULL,
    )


@with_cases
class CliErrorsTests(E2ETestCase):
    """The CLI and twistd never mislead; each failure is one line."""

    @cached_property
    def pki(self) -> tuple[Path, Pair]:
        """A CA's certificate, and a certificate and key for localhost/127.0.0.1 it signed."""
        directory = self.tmp_path / "pki"
        directory.mkdir()
        ca = make_ca(directory)
        return ca[0].cert, make_server_cert(directory, ca)

    @cases(sigint=(signal.SIGINT,), sigterm=(signal.SIGTERM,))
    def test_interrupted_get_exits_130_and_keeps_the_part(self, sig: int) -> None:
        """Ctrl-C (or SIGTERM) mid-download: exit 130 (143), one line with the resume hint, the part
        kept, no traceback; the same command then resumes and completes."""
        sha = make_file(self.root / "big.bin", 8 << 20)
        proxy = FaultProxy(self.start_server().port, rate=4 << 20)
        try:
            command = [script("tcpfiles"), "get", "--server", f"127.0.0.1:{proxy.port}", "big.bin"]
            proc = subprocess.Popen(command, cwd=self.tmp_path, stderr=subprocess.PIPE, text=True)

            def stalled_with_a_part() -> bool:
                if proxy.relayed["down"] >= 1 << 20:
                    proxy.stall()
                    parts = list(self.tmp_path.glob("big.bin.*.part"))
                    return bool(parts) and parts[0].stat().st_size > 0
                return False

            status, err = _interrupt_when(proc, stalled_with_a_part, sig)
        finally:
            proxy.close()
        assert status == 128 + sig, err
        assert err == "tcpfiles: interrupted; run the same command again to resume\n"
        assert not (self.tmp_path / "big.bin").exists()
        (part,) = self.tmp_path.glob("big.bin.*.part")
        assert part.stat().st_size > 0
        again = tcpfiles(
            "get", "--server", f"127.0.0.1:{proxy.upstream_port}", "big.bin", cwd=self.tmp_path
        )
        assert again.returncode == 0, again.stderr
        from tests.e2e.harness import sha256_file

        assert sha256_file(self.tmp_path / "big.bin") == sha

    def test_interrupted_put_exits_130(self) -> None:
        """Ctrl-C mid-upload: exit 130 and one line; the server publishes nothing."""
        make_file(self.tmp_path / "up.bin", 8 << 20)
        proxy = FaultProxy(self.start_server("--writable").port, rate=4 << 20)
        try:
            command = [script("tcpfiles"), "put", "--server", f"127.0.0.1:{proxy.port}", "up.bin"]
            proc = subprocess.Popen(command, cwd=self.tmp_path, stderr=subprocess.PIPE, text=True)

            def stalled() -> bool:
                if proxy.relayed["up"] >= 1 << 20:
                    proxy.stall()
                    return True
                return False

            status, err = _interrupt_when(proc, stalled)
        finally:
            proxy.close()
        assert status == 130, err
        assert err.startswith("tcpfiles: interrupted") and err.count("\n") == 1
        assert not (self.root / "up.bin").exists()

    def test_oneshot_empty_answer_keeps_the_local_file(self) -> None:
        """`get --oneshot` against a files port gets nothing: non-zero, the local file untouched."""
        (self.root / "notes.txt").write_bytes(b"remote\n")
        work = self.tmp_path / "work"
        work.mkdir()
        (work / "notes.txt").write_bytes(b"precious local data\n")
        port = self.start_server().port
        result = tcpfiles(
            "get", "--oneshot", "notes.txt", "--server", f"127.0.0.1:{port}", cwd=work
        )
        assert result.returncode == 3, result.stderr
        assert "nothing received" in result.stderr and result.stderr.count("\n") == 1
        assert (work / "notes.txt").read_bytes() == b"precious local data\n"
        assert [p.name for p in work.iterdir()] == ["notes.txt"]

    def test_wrong_kinds_of_server_fail_at_once(self) -> None:
        """Plain client to TLS, files client to chat, TLS client to plain: exit 3 at once, a
        hint."""
        ca, pair = self.pki
        tls = self.start_server(
            "--serve",
            "chat=tcp:0:interface=127.0.0.1",
            listen=f"ssl:0:interface=127.0.0.1:certKey={pair.cert}:privateKey={pair.key}",
        )
        plain = self.start_server()
        cases = [
            (["ls", "--server", f"127.0.0.1:{tls.port}"], "if it is a TLS server, use tls:"),
            (["ls", "--server", f"127.0.0.1:{tls.port_of('chat')}"], "not a tcpfiles files server"),
            (["get", "x", "--server", f"127.0.0.1:{tls.port_of('chat')}"], "not a tcpfiles files"),
            (
                ["ls", "--server", f"127.0.0.1:{plain.port}", "--ca", str(ca)],
                "it is not a TLS server",
            ),
        ]
        for args, hint in cases:
            started = time.monotonic()
            result = tcpfiles(*args, cwd=self.tmp_path)
            took = time.monotonic() - started
            assert result.returncode == 3, (args, result.stderr)
            assert hint in result.stderr, (args, result.stderr)
            assert result.stderr.count("\n") == 1 and "retrying" not in result.stderr
            assert took < 20, (args, took)  # no minute of retries

    @cases(
        timeout_negative=(["get", "x", "--timeout", "-1"], "--timeout -1"),
        timeout_nan=(["get", "x", "--timeout", "nan"], "--timeout nan"),
        timeout_zero=(["get", "x", "--timeout", "0"], "--timeout 0"),
        retry_for_negative=(["put", "f", "--retry-for", "-5"], "--retry-for -5"),
        server_missing_port=(["ls", "--server", "tcp:host=127.0.0.1"], "missing port"),
        server_empty=(["ls", "--server", ""], "the server is empty"),
        server_no_host=(["ls", "--server", ":8888"], "no host"),
    )
    def test_bad_values_are_usage_errors(self, args: list[str], says: str) -> None:
        """Each bad value is exit 2 and one line naming it, before anything connects."""
        (self.tmp_path / "f").write_bytes(b"x")
        result = tcpfiles(*args, cwd=self.tmp_path)
        assert result.returncode == 2, result.stderr
        assert says in result.stderr and result.stderr.count("\n") == 1, result.stderr

    def test_put_creates_missing_remote_directories(self) -> None:
        """`put FILE archive/2026/` and `put -r photos backup/photos` create the parents."""
        (self.tmp_path / "report.pdf").write_bytes(b"%PDF")
        (self.tmp_path / "photos" / "2025").mkdir(parents=True)
        (self.tmp_path / "photos" / "2025" / "a.jpg").write_bytes(b"jpg")
        port = self.start_server("--writable").port
        server = f"127.0.0.1:{port}"
        result = tcpfiles(
            "put", "report.pdf", "archive/2026/", "--server", server, cwd=self.tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert (self.root / "archive" / "2026" / "report.pdf").read_bytes() == b"%PDF"
        result = tcpfiles(
            "put", "-r", "photos", "backup/photos", "--server", server, cwd=self.tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert (self.root / "backup" / "photos" / "2025" / "a.jpg").read_bytes() == b"jpg"

    def test_get_recursive_skips_names_that_would_mislead(self) -> None:
        """`get -r` skips a name with a bidi override and one the server cannot serve (a
        backslash), each reported once, escaped once, and gets the rest."""
        (self.root / "d").mkdir()
        (self.root / "d" / "fine.txt").write_bytes(b"ok")
        (self.root / "d" / "evil\u202etxt.exe").write_bytes(b"x")
        (self.root / "d" / "back\\slash").write_bytes(b"x")  # no request can name it: listed as x
        port = self.start_server().port
        result = tcpfiles("get", "-r", "d", "--server", f"127.0.0.1:{port}", cwd=self.tmp_path)
        assert result.returncode == 0, result.stderr
        assert "skipped d/back\\\\slash: " in result.stderr, result.stderr  # escaped once
        assert (self.tmp_path / "d" / "fine.txt").read_bytes() == b"ok"
        assert sorted(p.name for p in (self.tmp_path / "d").iterdir()) == ["fine.txt"]
        assert "skipped d/evil\\u202etxt.exe" in result.stderr, result.stderr
        assert "\u202e" not in result.stderr

    def test_output_into_a_missing_directory_names_the_local_path(self) -> None:
        """-o into a directory that does not exist: exit 4, the local path in the one line."""
        (self.root / "a.txt").write_bytes(b"abc")
        port = self.start_server().port
        target = self.tmp_path / "missing" / "a.txt"
        result = tcpfiles(
            "get", "a.txt", "-o", str(target), "--server", f"127.0.0.1:{port}", cwd=self.tmp_path
        )
        assert result.returncode == 4, result.stderr
        assert str(target) in result.stderr and result.stderr.count("\n") == 1

    def test_listen_failures_are_one_line(self) -> None:
        """Port in use (foreground and daemon), UNIX socket in a missing directory: one line, exit
        1."""
        port = self.start_server().port
        in_use = f"tcp:{port}:interface=127.0.0.1"
        foreground = _twistd(self.root, in_use)
        assert foreground.returncode == 1
        assert foreground.stderr == (
            f"twistd: files: cannot listen on {in_use}: Address already in use\n"
        ), foreground.stderr
        daemon = subprocess.run(
            [
                script("twistd"),
                f"--pidfile={self.tmp_path / 'd.pid'}",
                f"--logfile={self.tmp_path / 'd.log'}",
                "tcpfiles",
                "--root",
                str(self.root),
                "--listen",
                in_use,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.tmp_path,
            stdin=subprocess.DEVNULL,
        )
        assert daemon.returncode == 1
        assert daemon.stderr == foreground.stderr
        assert not (self.tmp_path / "d.pid").exists()
        missing = _twistd(self.root, f"unix:{self.tmp_path / 'no' / 'such' / 'dir' / 'sock'}")
        assert missing.returncode == 1
        assert missing.stderr.count("\n") == 1 and "No such file or directory" in missing.stderr

    def test_listeners_say_whether_they_are_tls(self) -> None:
        """Every listener logs TLS or plain; a certificate beside a plain --listen is warned
        about."""
        _ca, pair = self.pki
        server = self.start_server("--tls-cert", str(pair.cert), "--tls-key", str(pair.key))
        server.wait_for(r"files listening on 127\.0\.0\.1:\d+ \(plain TCP\)")
        server.wait_for(r"--tls-cert is given but tcp:0:interface=127\.0\.0\.1 is plain TCP")
        tls = self.start_server(
            listen=f"ssl:0:interface=127.0.0.1:certKey={pair.cert}:privateKey={pair.key}"
        )
        tls.wait_for(r"files listening on 127\.0\.0\.1:\d+ \(TLS\)")

    def test_unix_socket_peer_and_listener_are_paths(self) -> None:
        """A UNIX-socket listener logs its path as text, not a bytes repr."""
        path = self.tmp_path / "files.sock"
        twistd = subprocess.Popen(
            twistd_command(self.root, f"unix:{path}"),
            cwd=self.root.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_until(path.exists, 30, "the socket")
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(str(path))
                client.sendall(b"GET nope\nQUIT\n")
                assert client.makefile("rb").read().endswith(b"OK bye\n")
        finally:
            twistd.send_signal(signal.SIGTERM)
            out, _ = twistd.communicate(timeout=30)
        assert f"files listening on {path} (UNIX socket)" in out, out
        assert "unix:(unnamed) GET nope" in out, out
        assert "b'" not in out and "UnixAddress" not in out, out

    def test_log_in_first_points_to_user(self) -> None:
        """A server with accounts refuses `ls` without --user, and the line says to give --user."""
        port = self.start_server("--auth", "memory:alice:pw").port
        result = tcpfiles("ls", "--server", f"127.0.0.1:{port}", cwd=self.tmp_path)
        assert result.returncode == 1, result.stderr
        assert "log in with --user NAME" in result.stderr and result.stderr.count("\n") == 1

    def test_put_of_a_missing_local_file_names_it(self) -> None:
        """`put` of a file that does not exist: exit 4 (a local file problem), its path in one
        line."""
        result = tcpfiles("put", "nope.bin", "--server", "127.0.0.1:1", cwd=self.tmp_path)
        assert result.returncode == 4, result.stderr
        assert result.stderr == "tcpfiles: cannot use nope.bin: No such file or directory\n"
