"""--metrics end to end: a real twistd, a known load, one scrape, exact numbers; and
``tcpfiles status`` while a slow download and an unfinished upload are in flight."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import signal
import socket
import threading
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Twistd, Wire, make_file, run_cli, wait_until

METRICS = ("--metrics", "tcp:0:interface=127.0.0.1")
SMALL = b"hello world"  # 11 bytes


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One scrape of /metrics, every sample by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class LineClient:
    """A blocking chat client."""

    def __init__(self, port: int) -> None:
        self.wire = Wire(port)
        assert self.wire.line().startswith(b"*** tcpfiles chat")

    def say(self, text: str) -> None:
        self.wire.send(text.encode() + b"\n")

    def until(self, prefix: bytes) -> bytes:
        for _ in range(50):
            line = self.wire.line()
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line starting with {prefix!r}")


class MetricsTests(E2ETestCase):
    def start(self) -> tuple[Twistd, int, int]:
        (self.root / "small.txt").write_bytes(SMALL)
        server = self.start_server(
            "--auth",
            "memory:alice:alices-pw:bob:bobs-pw",
            "--anonymous",
            "--writable",
            "--max-connections",
            "3",
            "--serve",
            "chat=tcp:0:interface=127.0.0.1",
            *METRICS,
        )
        return server, server.port_of("metrics"), server.port_of("chat")

    def test_a_scrape_counts_exactly_what_was_done(self) -> None:
        server, metrics_port, chat_port = self.start()
        first, second, third = Wire(server.port), Wire(server.port), Wire(server.port)
        for _ in range(5):
            assert first.get("small.txt") == SMALL
        assert second.get("small.txt") == SMALL and third.get("small.txt") == SMALL
        first.send(b"GET missing\nGET missing\n")
        answers = [first.line() for _ in range(2)]  # each an answer's bytes, out
        assert [line[:13] for line in answers] == [b"ERR not-found"] * 2
        first.send(b"LOGIN alice wrong\nLOGIN alice alices-pw\n")
        answers += [first.line(), first.line()]
        assert answers[2].startswith(b"ERR unauthorized")
        assert answers[3].startswith(b"OK welcome")
        body = bytes(range(256)) * 4  # 1024 bytes
        first.send(f"PUT 1024 {hashlib.sha256(body).hexdigest()} up.bin\n".encode())
        assert first.line() == b"OK send 1024"
        first.send(body)
        assert first.line().startswith(b"OK stored")
        for _ in range(2):  # over --max-connections 3: refused, told why
            refused = Wire(server.port)
            assert refused.line().startswith(b"ERR busy too many connections")
            assert refused.at_eof()
            refused.close()
        alice, bob = LineClient(chat_port), LineClient(chat_port)
        alice.say("/login alice alices-pw")
        alice.until(b"*** welcome")
        bob.say("/login bob bobs-pw")
        bob.until(b"*** welcome")
        alice.say("hi")
        alice.say("there")
        bob.until(b"<alice> there")
        bob.say("/msg alice psst")
        alice.until(b"[bob -> alice] psst")

        page = scrape(metrics_port)

        def at(name: str, **labels: str) -> float:
            return page[(name, tuple(sorted(labels.items())))]

        requests = "tcpfiles_files_requests_total"
        assert at(requests, verb="GET", outcome="OK") == 7
        assert at(requests, verb="GET", outcome="ERR not-found") == 2
        assert at(requests, verb="LOGIN", outcome="ERR unauthorized") == 1
        assert at(requests, verb="LOGIN", outcome="OK") == 1
        assert at(requests, verb="PUT", outcome="OK") == 1
        assert sum(v for (name, _), v in page.items() if name == requests) == 12
        assert at("tcpfiles_files_bytes_total", direction="in") == 1024
        out = 7 * len(SMALL) + sum(len(line) + 1 for line in answers)  # bodies, answer lines
        assert at("tcpfiles_files_bytes_total", direction="out") == out
        assert at("tcpfiles_files_transfer_seconds_count", verb="GET") == 7
        assert at("tcpfiles_files_transfer_seconds_count", verb="PUT") == 1
        assert at("tcpfiles_files_transfer_seconds_bucket", verb="GET", le="+Inf") == 7
        assert at("tcpfiles_connections_open", behaviour="files") == 3
        assert at("tcpfiles_connections_accepted_total", behaviour="files") == 3
        refused = "tcpfiles_connections_refused_total"
        assert at(refused, behaviour="files", reason="max-connections") == 2
        assert at("tcpfiles_connections_open", behaviour="chat") == 2
        assert at("tcpfiles_chat_users") == 2
        assert at("tcpfiles_chat_messages_total") == 3
        assert at("tcpfiles_login_failures_total") == 1
        assert at("tcpfiles_uploads_in_flight") == 0
        assert at("tcpfiles_hash_queue") == 0
        for client in (first, second, third, alice.wire, bob.wire):
            client.close()


class StatusTests(E2ETestCase):
    def test_status_shows_transfers_in_flight_with_their_rates(self) -> None:
        size = 64 << 20
        make_file(self.root / "big.bin", size)
        server = self.start_server("--writable", *METRICS)
        metrics_port = server.port_of("metrics")
        # A download whose reader stops after a few bytes: it stays in flight.
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(20)
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(b"GET big.bin\n")
        head = b""
        while b"\n" not in head:  # the status line, and perhaps a few bytes of the body
            chunk = slow.recv(100)
            assert chunk, head
            head += chunk
        assert head.startswith(b"OK 67108864\n"), head
        reader = slow.getsockname()[1]
        # An upload whose client sent 100 of its 1000 bytes.
        upload = Wire(server.port)
        upload.send(f"PUT 1000 {'0' * 64} up.bin\n".encode())
        assert upload.line() == b"OK send 1000"
        upload.send(b"u" * 100)

        def status() -> dict:
            done = run_cli("status", str(metrics_port), "--json")
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        wait_until(
            lambda: any(t["bytes"] == 100 for t in status()["transfers"]), 20, "the upload's bytes"
        )
        done = run_cli("status", f"127.0.0.1:{metrics_port}")
        assert done.returncode == 0, done.stderr
        text = done.stdout
        assert "connections: files 2\n" in text, text
        assert "transfers in flight: 2\n" in text, text
        line = (
            rf"  files 127\.0\.0\.1:{reader} GET big\.bin: "
            r"[\d.]+ \w+ of 64\.0 MiB in [\d.]+ s \([\d.]+ \w+/s\)"
        )
        assert re.search(line, text), text
        assert re.search(r"  files 127\.0\.0\.1:\d+ PUT 1000 0{64} up\.bin: 100 B of 1000 B", text)
        assert "uploads in flight: 1\n" in text, text
        [download] = [t for t in status()["transfers"] if t["request"] == "GET big.bin"]
        assert 0 < download["bytes"] < size and download["size"] == size
        assert download["rate"] > 0
        slow.close()
        upload.close()
        server.wait_for(r"PUT 1000 0{64} up\.bin -> aborted")


class WorkersMetricsTests(E2ETestCase):
    def test_the_parent_page_sums_every_worker(self) -> None:
        """``--workers 2 --metrics``: the parent serves one page, the sum of both workers'
        counters (each request counted once, whichever worker answered it); after a worker is
        killed, what it counted is still there and its replacement adds to it."""
        (self.root / "small.txt").write_bytes(SMALL)
        temporary = self.tmp_path / "tmp"  # where the parent makes the workers' directory
        temporary.mkdir()
        server = self.start_server(
            "--workers", "2", *METRICS, env={**os.environ, "TMPDIR": str(temporary)}
        )
        metrics_port = server.port_of("metrics")
        for index in (1, 2):
            server.wait_for(rf"\[worker {index} tcpfiles\.core\.service#info\] files listening")
        requests = ("tcpfiles_files_requests_total", (("outcome", "OK"), ("verb", "GET")))
        accepted = ("tcpfiles_connections_accepted_total", (("behaviour", "files"),))
        served: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()

        def client(count: int) -> None:
            for _ in range(count):
                wire = Wire(server.port)
                try:
                    answer = wire.get("small.txt")
                finally:
                    wire.close()
                with lock:
                    served["ok" if answer == SMALL else "wrong"] += 1

        threads = [threading.Thread(target=client, args=(10,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertEqual(served, {"ok": 40})
        # Counters are written at once; readings from live objects within a second.
        wait_until(
            lambda: (page := scrape(metrics_port)).get(requests) == 40 and page.get(accepted) == 40,
            20,
            "the parent's page to count the 40 GETs of both workers",
        )
        pids = sorted(
            {
                int(m.group(1))
                for m in re.finditer(r"started worker \d \(pid (\d+)\)", server.text())
            }
        )
        self.assertEqual(len(pids), 2)
        os.kill(pids[0], signal.SIGKILL)
        server.wait_for(rf"\(pid {pids[0]}\) was killed by SIGKILL")
        client(5)
        self.assertEqual(served, {"ok": 45})
        wait_until(
            lambda: scrape(metrics_port).get(requests) == 45,
            20,
            "45 GETs counted after a worker was killed and replaced",
        )
        [directory] = list(temporary.iterdir())
        assert directory.name.startswith("tcpfiles-metrics-")
        server.stop()
        self.assertEqual(list(temporary.iterdir()), [])  # removed once the parent has stopped

    def test_the_parent_status_merges_every_worker(self) -> None:
        """``tcpfiles status`` against the parent of ``--workers 2``: both workers counted,
        a transfer in flight in one of them shown with its worker's pid; a stopped transfer
        leaves it within a second or so."""
        make_file(self.root / "big.bin", 64 << 20)
        server = self.start_server("--workers", "2", *METRICS)
        metrics_port = server.port_of("metrics")
        for index in (1, 2):
            server.wait_for(rf"\[worker {index} tcpfiles\.core\.service#info\] files listening")
        pids = {
            int(m.group(1)) for m in re.finditer(r"started worker \d \(pid (\d+)\)", server.text())
        }
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(20)
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(b"GET big.bin\n")
        assert slow.recv(12).startswith(b"OK 67108864"), "the download began"

        def status() -> dict:
            done = run_cli("status", str(metrics_port), "--json")
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        wait_until(
            lambda: status()["workers"] == 2 and len(status()["transfers"]) == 1,
            20,
            "both workers' status, with the download in flight",
        )
        page = status()
        self.assertEqual(page["connections"], {"files": 1})
        [transfer] = page["transfers"]
        self.assertEqual(transfer["request"], "GET big.bin")
        self.assertIn(transfer["worker"], pids)
        text = run_cli("status", str(metrics_port)).stdout
        self.assertIn("workers: 2\n", text)
        self.assertIn("transfers in flight: 1\n", text)
        slow.close()
        wait_until(lambda: status()["transfers"] == [], 20, "the closed download to leave")
