"""Transfers against real processes on loopback, with faults: killed servers and clients, cut
and stalled connections, a full disk, racing uploads."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
from pathlib import Path

from tests.e2e.cases import E2ETestCase
from tests.e2e.faultproxy import FaultProxy
from tests.e2e.harness import Twistd, Wire, make_file, script, sha256_file


def temporaries(root: Path) -> list[str]:
    return [
        name for _, _, files in os.walk(root) for name in files if name.startswith(".tcpfiles-")
    ]


def tcpfiles(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [script("tcpfiles"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


class TransfersTests(E2ETestCase):
    """Transfers against real processes on loopback, with faults."""

    def proxy(self, port: int, rate: float | None = None) -> FaultProxy:
        """A FaultProxy in front of ``port``, closed when the test is done (before the servers
        started earlier are stopped)."""
        proxy = FaultProxy(port, rate)
        self.addCleanup(proxy.close)
        return proxy

    def small_disk(self) -> Path:
        """A 8 MiB tmpfs to serve from (skipped where mounting is not allowed)."""
        mount = self.tmp_path / "disk"
        mount.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        self.addCleanup(subprocess.run, ["umount", "-l", str(mount)], check=False)
        return mount

    def test_server_killed_mid_download_and_restarted(self) -> None:
        """SIGKILL the server mid-download, start another: the running get resumes and verifies,
        and the second server sends only the remainder."""
        size = 48 << 20
        sha = make_file(self.root / "big.bin", size)
        first = self.start_server()
        proxy = self.proxy(first.port, rate=16 << 20)
        out = self.tmp_path / "out"
        out.mkdir()
        client = tcpfiles(
            "get", "-s", f"127.0.0.1:{proxy.port}", "big.bin", "--retry-for", "60", cwd=out
        )
        proxy.wait_relayed("down", 8 << 20)
        first.stop(signal.SIGKILL)
        second = self.start_server(listen=f"tcp:{first.port}:interface=127.0.0.1")
        code, err = finish(client)
        assert code == 0, err
        assert "retrying" in err
        assert sha256_file(out / "big.bin") == sha
        resumed = second.wait_for(r"RESUME (\d+) big\.bin -> OK (\d+) bytes")
        offset, count = int(resumed.group(1)), int(resumed.group(2))
        assert offset >= 1 << 20 and offset + count == size
        assert "GET big.bin" not in second.text()  # never sent from the start again
        assert not list(out.glob("*.part"))

    def test_client_killed_mid_upload_leaves_nothing(self) -> None:
        """SIGKILL the client mid-upload: no partial file is visible and the temporary goes."""
        server = self.start_server("--writable")
        proxy = self.proxy(server.port, rate=8 << 20)
        make_file(self.tmp_path / "up.bin", 32 << 20)
        client = tcpfiles(
            "put", "-s", f"127.0.0.1:{proxy.port}", str(self.tmp_path / "up.bin"), cwd=self.tmp_path
        )
        proxy.wait_relayed("up", 4 << 20)
        assert len(temporaries(self.root)) == 1
        client.send_signal(signal.SIGKILL)
        client.communicate(timeout=30)
        server.wait_for(r"PUT \d+ \w+ up\.bin -> aborted: (connection lost|input ended mid-body)")
        assert temporaries(self.root) == [] and not (self.root / "up.bin").exists()

    def test_cut_connection_resumes_download(self) -> None:
        """The proxy resets the connection mid-download: get reconnects and resumes."""
        sha = make_file(self.root / "big.bin", 32 << 20)
        server = self.start_server()
        proxy = self.proxy(server.port, rate=16 << 20)
        client = tcpfiles("get", "-s", f"127.0.0.1:{proxy.port}", "big.bin", cwd=self.tmp_path)
        proxy.wait_relayed("down", 8 << 20)
        proxy.cut()
        code, err = finish(client)
        assert code == 0, err
        assert sha256_file(self.tmp_path / "big.bin") == sha
        server.wait_for(r"RESUME [1-9]\d* big\.bin -> OK")

    def test_stalled_connection_is_dropped_and_resumed(self) -> None:
        """The proxy stops forwarding: the client's --timeout drops it, reconnects, resumes."""
        sha = make_file(self.root / "big.bin", 32 << 20)
        server = self.start_server()
        proxy = self.proxy(server.port, rate=16 << 20)
        client = tcpfiles(
            "get", "-s", f"127.0.0.1:{proxy.port}", "big.bin", "--timeout", "2", cwd=self.tmp_path
        )
        proxy.wait_relayed("down", 8 << 20)
        proxy.stall()
        code, err = finish(client)
        assert code == 0, err
        assert "no progress for 2 s" in err
        assert sha256_file(self.tmp_path / "big.bin") == sha
        server.wait_for(r"RESUME [1-9]\d* big\.bin -> OK")

    def test_interrupted_get_resumes_in_the_next_run(self) -> None:
        """A get killed mid-way leaves its .part; the next run sends only the rest, verified."""
        size = 32 << 20
        sha = make_file(self.root / "big.bin", size)
        server = self.start_server()
        proxy = self.proxy(server.port, rate=16 << 20)
        first = tcpfiles("get", "-s", f"127.0.0.1:{proxy.port}", "big.bin", cwd=self.tmp_path)
        proxy.wait_relayed("down", 8 << 20)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        parts = list(self.tmp_path.glob("big.bin.*.part"))
        assert len(parts) == 1 and parts[0].stat().st_size > 0
        second = tcpfiles("get", "-s", f"127.0.0.1:{server.port}", "big.bin", cwd=self.tmp_path)
        code, err = finish(second)
        assert code == 0, err
        assert sha256_file(self.tmp_path / "big.bin") == sha
        resumed = server.wait_for(r"RESUME (\d+) big\.bin -> OK (\d+) bytes")
        assert int(resumed.group(1)) > 0 and int(resumed.group(1)) + int(resumed.group(2)) == size

    def test_concurrent_uploads_of_one_name(self) -> None:
        """Two uploads of one name at once: the second is told busy; one whole file wins."""
        server = self.start_server("--writable")
        first_body, second_body = b"A" * 200_000, b"B" * 200_000
        first, second = Wire(server.port), Wire(server.port)
        digest = hashlib.sha256(first_body).hexdigest()
        first.send(f"PUT 200000 {digest} same.bin\n".encode())
        assert first.line() == b"OK send 200000"
        first.send(first_body[:100_000])
        other = hashlib.sha256(second_body).hexdigest()
        second.send(f"REPLACE 200000 {other} same.bin\n".encode())
        assert second.line().startswith(b"ERR busy")
        first.send(first_body[100_000:])
        assert first.line() == f"OK stored 200000 {digest}".encode()
        assert (self.root / "same.bin").read_bytes() == first_body
        second.send(f"REPLACE 200000 {other} same.bin\n".encode())  # now it may go
        assert second.line() == b"OK send 200000"
        second.send(second_body)
        assert second.line().startswith(b"OK stored")
        assert (self.root / "same.bin").read_bytes() == second_body and temporaries(self.root) == []

    def test_disk_full_during_upload(self) -> None:
        """The disk fills mid-body: a clear error, the temporary removed, the server serving on."""
        small_disk = self.small_disk()
        (small_disk / "small.txt").write_bytes(b"still here")
        server = Twistd(small_disk, "--writable")
        try:
            body = os.urandom(6 << 20)
            wire = Wire(server.port)
            wire.send(f"PUT {len(body)} {hashlib.sha256(body).hexdigest()} big.bin\n".encode())
            assert wire.line() == f"OK send {len(body)}".encode()  # it fitted when asked
            (small_disk / "filler").write_bytes(b"\0" * (4 << 20))  # ...and then it does not
            wire.send(body)
            assert wire.line().startswith(b"ERR too-large the server's disk is full")
            assert wire.get("small.txt") == b"still here"  # the same connection goes on
            assert temporaries(small_disk) == [] and not (small_disk / "big.bin").exists()
        finally:
            server.stop()
        server.assert_clean_log()

    def test_put_and_get_whole_trees(self) -> None:
        """put -r uploads a tree (directories made, links skipped); get -r brings it back."""
        server = self.start_server("--writable")
        tree = self.tmp_path / "tree"
        (tree / "sub" / "deeper").mkdir(parents=True)
        shas = {
            rel: make_file(tree / rel, size, seed)
            for seed, (rel, size) in enumerate(
                [("a.bin", 1 << 20), ("sub/b.bin", 10), ("sub/deeper/c.bin", 0)]
            )
        }
        os.symlink("a.bin", tree / "link")
        put = tcpfiles(
            "put", "-s", f"127.0.0.1:{server.port}", "-r", str(tree), "up", cwd=self.tmp_path
        )
        code, err = finish(put)
        assert code == 0, err
        assert re.search(r"skipped .*link", err)
        out = self.tmp_path / "out"
        out.mkdir()
        get = tcpfiles("get", "-s", f"127.0.0.1:{server.port}", "-r", "up", cwd=out)
        code, err = finish(get)
        assert code == 0, err
        for rel, sha in shas.items():
            assert sha256_file(out / "up" / rel) == sha
        assert not (out / "up" / "link").exists()

    def test_server_killed_mid_upload_and_restarted(self) -> None:
        """The server dies mid-upload: the new one clears the dead one's temporary at start, the
        running put uploads again, and exactly one whole file ends up under the name."""
        first = self.start_server("--writable")
        proxy = self.proxy(first.port, rate=8 << 20)
        sha = make_file(self.tmp_path / "up.bin", 24 << 20)
        client = tcpfiles(
            "put",
            "-s",
            f"127.0.0.1:{proxy.port}",
            str(self.tmp_path / "up.bin"),
            "--retry-for",
            "60",
            cwd=self.tmp_path,
        )
        proxy.wait_relayed("up", 4 << 20)
        assert len(temporaries(self.root)) == 1
        first.stop(signal.SIGKILL)  # no chance to clean up
        assert len(temporaries(self.root)) == 1
        second = self.start_server("--writable", listen=f"tcp:{first.port}:interface=127.0.0.1")
        second.wait_for(r"removed a stale upload temporary: .*\.tcpfiles-[0-9a-f]{16}\.part")
        code, err = finish(client)
        assert code == 0, err
        assert "retrying" in err
        assert sha256_file(self.root / "up.bin") == sha and temporaries(self.root) == []
