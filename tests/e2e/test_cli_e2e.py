"""The tcpfiles command against a real server: success and failure paths."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import make_file, script, sha256_file


def tcpfiles(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [script("tcpfiles"), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


class CliTests(E2ETestCase):
    """The tcpfiles command against a real server."""

    def test_get_into_current_directory(self) -> None:
        """`tcpfiles get` fetches several files by base name, verified, and exits 0."""
        sha = make_file(self.root / "docs" / "big.bin", 5 << 20)
        (self.root / "notes.txt").write_bytes(b"hello\n")
        out_dir = self.tmp_path / "out"
        out_dir.mkdir()
        port = self.start_server().port
        result = tcpfiles(
            "get", "--server", f"127.0.0.1:{port}", "docs/big.bin", "/notes.txt", cwd=out_dir
        )
        assert result.returncode == 0, result.stderr
        assert sha256_file(out_dir / "big.bin") == sha
        assert (out_dir / "notes.txt").read_bytes() == b"hello\n"
        assert sorted(p.name for p in out_dir.iterdir()) == ["big.bin", "notes.txt"]
        assert result.stderr == ""  # not a terminal: no progress bar

    def test_get_to_a_file_path_with_endpoint_string(self) -> None:
        """-o names the file for one REMOTE; --server takes a Twisted endpoint string."""
        (self.root / "a.txt").write_bytes(b"abc")
        port = self.start_server().port
        result = tcpfiles(
            "get",
            "--server",
            f"tcp:host=127.0.0.1:port={port}",
            "a.txt",
            "-o",
            str(self.tmp_path / "renamed.txt"),
            cwd=self.tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert (self.tmp_path / "renamed.txt").read_bytes() == b"abc"

    def test_get_missing_file_fails_and_leaves_nothing(self) -> None:
        """A refused GET exits 1 with one line on stderr and no file or .part left."""
        out_dir = self.tmp_path / "out"
        out_dir.mkdir()
        port = self.start_server().port
        result = tcpfiles("get", "--server", f"127.0.0.1:{port}", "nope.txt", cwd=out_dir)
        assert result.returncode == 1
        assert (
            result.stderr == "tcpfiles: nope.txt: no such file or directory: nope.txt (not-found)\n"
        )
        assert list(out_dir.iterdir()) == []

    def test_get_directory_is_refused(self) -> None:
        """Asking `get` for a directory is a clear refusal."""
        (self.root / "sub").mkdir()
        port = self.start_server().port
        result = tcpfiles("get", "--server", f"127.0.0.1:{port}", "sub", cwd=self.tmp_path)
        assert result.returncode == 1
        assert "(not-a-file)" in result.stderr

    def test_get_without_server_exits_3(self) -> None:
        """No server listening: exit 3 and a one-line reason."""
        import socket

        with socket.socket() as s:  # a port that is certainly closed: bound, never listening
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            result = tcpfiles("get", "--server", f"127.0.0.1:{port}", "x", cwd=self.tmp_path)
        assert result.returncode == 3
        assert "connection refused" in result.stderr
        assert result.stderr.count("\n") == 1

    def test_get_usage_errors_exit_2(self) -> None:
        """Several REMOTEs need a directory DEST; a bad --server is a usage error."""
        result = tcpfiles("get", "a", "b", "-o", str(self.tmp_path / "file.txt"), cwd=self.tmp_path)
        assert result.returncode == 2
        assert "must be an existing directory" in result.stderr
        result = tcpfiles("get", "--server", "127.0.0.1:notaport", "a", cwd=self.tmp_path)
        assert result.returncode == 2

    def test_ls_table(self) -> None:
        """`tcpfiles ls` prints size, UTC time and name, directories with a slash."""
        make_file(self.root / "big.bin", 3 << 20)
        (self.root / "sub").mkdir()
        (self.root / "sub" / "in.txt").write_bytes(b"x")
        port = self.start_server().port
        result = tcpfiles("ls", "--server", f"127.0.0.1:{port}", cwd=self.tmp_path)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].split()[:2] == ["3.0", "MiB"] and lines[0].endswith("  big.bin")
        assert lines[1].startswith("      -  ") and lines[1].endswith("  sub/")
        result = tcpfiles("ls", "--server", f"127.0.0.1:{port}", "sub", cwd=self.tmp_path)
        assert result.stdout.split()[0:2] == ["1", "B"]
        result = tcpfiles("ls", "--server", f"127.0.0.1:{port}", "nope", cwd=self.tmp_path)
        assert result.returncode == 1
        assert "(not-found)" in result.stderr

    def test_progress_bar_on_a_terminal(self) -> None:
        """With stderr on a terminal, get draws a progress bar with size, rate and the file name."""
        import fcntl
        import os
        import pty
        import struct
        import termios

        make_file(self.root / "big.bin", 8 << 20)
        port = self.start_server().port
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        proc = subprocess.Popen(
            [script("tcpfiles"), "get", "--server", f"127.0.0.1:{port}", "big.bin"],
            cwd=self.tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=follower,
        )
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=60) == 0
        os.close(leader)
        text = seen.decode("utf-8", "replace")
        assert "big.bin" in text and "100%" in text and "8.00M" in text, text

    def test_put_to_a_read_only_server_and_over_an_existing_file(self) -> None:
        """put is refused by a read-only server (exit 1); without --overwrite, so is a clash."""
        (self.tmp_path / "a.txt").write_bytes(b"local")
        port = self.start_server().port
        result = tcpfiles(
            "put", "-s", f"127.0.0.1:{port}", str(self.tmp_path / "a.txt"), cwd=self.tmp_path
        )
        assert result.returncode == 1 and "(read-only)" in result.stderr

    def test_put_overwrite(self) -> None:
        """put refuses to replace a file unless --overwrite; then it replaces it whole."""
        (self.root / "a.txt").write_bytes(b"remote")
        (self.tmp_path / "a.txt").write_bytes(b"local")
        port = self.start_server("--writable").port
        base = ["put", "-s", f"127.0.0.1:{port}", str(self.tmp_path / "a.txt")]
        result = tcpfiles(*base, cwd=self.tmp_path)
        assert result.returncode == 1 and "--overwrite replaces it" in result.stderr
        assert (self.root / "a.txt").read_bytes() == b"remote"
        assert tcpfiles(*base, "--overwrite", cwd=self.tmp_path).returncode == 0
        assert (self.root / "a.txt").read_bytes() == b"local"
