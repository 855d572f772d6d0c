"""Bandwidth and quotas end to end (issue 15): a real twistd with --rate, measured by the client,
and an account's quota refusing the CLI's put."""

from __future__ import annotations

import hashlib
import os
import threading
import time

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Wire, make_file, run_cli

MIB = 1 << 20
SIZE = 8 * MIB


def timed_body(wire: Wire, size: int) -> tuple[float, int, str]:
    """Read a body of ``size``: the seconds from its first byte to its last, the bytes that
    came after the first read (those the rate paced), and the body's sha256."""
    digest = hashlib.sha256(wire.buffer)
    got = len(wire.buffer)
    wire.buffer = b""
    view = bytearray(MIB)
    first = time.monotonic() if got else None
    after_first = 0
    while got < size:
        n = wire.sock.recv_into(view, min(size - got, len(view)))
        assert n, f"server closed after {got} bytes"
        if first is None:
            first = time.monotonic()
        else:
            after_first += n
        digest.update(view[:n])
        got += n
    assert first is not None
    return time.monotonic() - first, after_first, digest.hexdigest()


class RateTests(E2ETestCase):
    """--rate 2M on a real server: 2 MiB/s as the client measures it, either way."""

    def test_download_at_the_rate(self) -> None:
        """An 8 MiB GET (sendfile) arrives at 1.8-2.2 MiB/s from its first byte to its last."""
        sha = make_file(self.root / "big.bin", SIZE)
        server = self.start_server("--rate", "2M")
        wire = Wire(server.port, timeout=20)
        wire.send(b"GET big.bin\n")
        assert wire.line() == b"OK %d" % SIZE
        seconds, paced, got_sha = timed_body(wire, SIZE)
        assert got_sha == sha
        rate = paced / seconds / MIB
        assert 1.8 <= rate <= 2.2, f"{rate:.2f} MiB/s ({paced} bytes in {seconds:.2f} s)"
        wire.close()

    def test_upload_at_the_rate(self) -> None:
        """An 8 MiB PUT is taken at 1.8-2.2 MiB/s: from the first byte sent to OK stored."""
        server = self.start_server("--rate", "2MiB", "--writable")
        body = os.urandom(SIZE)
        digest = hashlib.sha256(body).hexdigest()
        wire = Wire(server.port, timeout=20)
        wire.send(b"PUT %d %s up.bin\n" % (SIZE, digest.encode()))
        assert wire.line() == b"OK send %d" % SIZE
        start = time.monotonic()
        wire.send(body)
        assert wire.line() == b"OK stored %d %s" % (SIZE, digest.encode())
        rate = SIZE / (time.monotonic() - start) / MIB
        assert 1.8 <= rate <= 2.2, f"{rate:.2f} MiB/s"
        assert hashlib.sha256((self.root / "up.bin").read_bytes()).hexdigest() == digest
        wire.close()


class QuotaTests(E2ETestCase):
    """quota= in the users file, through the CLI."""

    def test_put_over_quota_is_refused_with_a_clear_message(self) -> None:
        """alice may store 4 KiB: a 5 KiB put is refused before its body (exit 1, the reason
        on stderr, nothing stored); a 3 KiB one goes in, and then 2 KiB more does not."""
        (self.root / "alice").mkdir()
        users = self.tmp_path / "users"
        users.write_text("alice alice rw quota=4K\n")
        server = self.start_server(
            "--auth", "memory:alice:alices-pw", "--users", str(users), "--writable"
        )
        for name, size in (("five.bin", 5 << 10), ("three.bin", 3 << 10), ("two.bin", 2 << 10)):
            (self.tmp_path / name).write_bytes(os.urandom(size))
        alice = {"TCPFILES_PASSWORD": "alices-pw"}
        base = ["put", "-s", f"127.0.0.1:{server.port}", "--user", "alice"]
        refused = run_cli(*base, str(self.tmp_path / "five.bin"), env=alice, cwd=self.tmp_path)
        assert refused.returncode == 1, refused
        assert "5120 bytes would take your account over its quota of 4096 bytes" in refused.stderr
        assert "(over-quota)" in refused.stderr
        assert not (self.root / "alice" / "five.bin").exists()
        done = run_cli(*base, str(self.tmp_path / "three.bin"), env=alice, cwd=self.tmp_path)
        assert done.returncode == 0, done
        again = run_cli(*base, str(self.tmp_path / "two.bin"), env=alice, cwd=self.tmp_path)
        assert again.returncode == 1 and "(3072 stored, 0 in uploads under way)" in again.stderr
        server.wait_for(r"PUT .*five\.bin -> ERR over-quota")


class AccountRateTests(E2ETestCase):
    """rate= in the users file, on a real server: one allowance for all of alice's connections."""

    def test_two_connections_share_the_account_rate(self) -> None:
        """alice (rate=2M) downloads 4 MiB on two connections at once: each gets about half of
        2 MiB/s, not 2 MiB/s each."""
        (self.root / "alice").mkdir()
        make_file(self.root / "alice" / "big.bin", 4 * MIB)
        users = self.tmp_path / "users"
        users.write_text("alice alice ro rate=2M\n")
        server = self.start_server("--auth", "memory:alice:alices-pw", "--users", str(users))
        wires = [Wire(server.port, timeout=20) for _ in range(2)]
        for wire in wires:
            wire.send(b"LOGIN alice alices-pw\n")
            assert wire.line().startswith(b"OK welcome")
        for wire in wires:
            wire.send(b"GET big.bin\n")
        results: list[tuple[float, int, str]] = []
        threads = [
            threading.Thread(target=lambda w=wire: results.append(_status_then_body(w)))
            for wire in wires
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(results) == 2, "a download did not finish within 30 s"
        for seconds, paced, _ in results:
            rate = paced / seconds / MIB
            assert 0.8 <= rate <= 1.2, f"{rate:.2f} MiB/s each ({paced} bytes in {seconds:.2f} s)"
        for wire in wires:
            wire.close()


def _status_then_body(wire: Wire) -> tuple[float, int, str]:
    assert wire.line() == b"OK %d" % (4 * MIB)
    return timed_body(wire, 4 * MIB)
