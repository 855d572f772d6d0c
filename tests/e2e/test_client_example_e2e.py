"""The README's async/await client example, run as shown against a real writable server."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from tests.e2e.cases import E2ETestCase


def client_example() -> str:
    """The README's ``client-example`` block."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    return readme.split("<!-- client-example -->\n```python\n")[1].split("```")[0]


def run_example(code: str, port: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    (cwd / "example.py").write_text(code.replace('"localhost:8888"', f'"127.0.0.1:{port}"'))
    return subprocess.run(
        [sys.executable, "example.py"], cwd=cwd, capture_output=True, text=True, timeout=60
    )


class ClientExampleTests(E2ETestCase):
    """The README's client example against a real server, writable and read-only."""

    def test_client_example_from_readme(self) -> None:
        """It lists, fetches, makes a directory and uploads, printing what it did; exit 0."""
        (self.root / "notes.txt").write_bytes(b"hello\n")
        (self.root / "docs").mkdir()
        sha = hashlib.sha256(b"hello\n").hexdigest()
        work = self.tmp_path / "work"
        work.mkdir()
        result = run_example(client_example(), self.start_server("--writable").port, work)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines == [
            "dir - docs",
            "file 6 notes.txt",
            f"fetched 6 bytes, sha256 {sha[:12]}",
            f"stored, sha256 {sha[:12]}",
        ]
        assert (work / "notes-copy.txt").read_bytes() == b"hello\n"
        assert (self.root / "backup" / "notes.txt").read_bytes() == b"hello\n"

    def test_client_example_from_readme_refused(self) -> None:
        """Against a read-only server the upload is refused: one line naming the code; exit 0."""
        (self.root / "notes.txt").write_bytes(b"hello\n")
        result = run_example(client_example(), self.start_server().port, self.tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1].startswith("refused: read-only "), result.stdout
