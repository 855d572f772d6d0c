"""Behind a real HAProxy (``mode tcp``, ``send-proxy-v2``): tcpfiles sees the real clients.

HAProxy is started by the test on free loopback ports with its own configuration, in front of
two ``twistd tcpfiles`` listening on ``haproxy:tcp:``; clients connect from different loopback
addresses (127.0.0.2, 127.0.0.3, …).  Readiness is HAProxy's own view of its servers (its
stats socket says every health check passed), polled; HAProxy is stopped by its PID.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
from pathlib import Path

from tests.e2e.cases import E2ETestCase
from tests.e2e.certs import make_ca, make_server_cert
from tests.e2e.harness import Twistd, Wire, make_file, wait_until
from tests.external import require_binary

PAGE = Path(__file__).parents[2] / "docs" / "operations.md"

#: A second frontend for the limit test: one server, so every client meets the same limits.
SINGLE = """
frontend single
    bind 127.0.0.1:{single}
    default_backend single

backend single
    server one 127.0.0.1:{one} send-proxy-v2 check inter 200ms
"""


def documented_config(
    stats: Path, front: int, one: int, two: int | None = None, single: int | None = None
) -> str:
    """docs/operations.md's HAProxy configuration, on the test's ports (``two`` None: without
    the second server; ``single``: with :data:`SINGLE`), checking every 200 ms."""
    text = re.search(r"<!-- haproxy.cfg -->\n```\n(.*?)```", PAGE.read_text(), re.S)
    assert text is not None, "docs/operations.md has no <!-- haproxy.cfg --> block"
    config = text.group(1)
    for old, new in [
        ("/run/haproxy/admin.sock", str(stats)),
        ("bind :8888", f"bind 127.0.0.1:{front}"),
        ("127.0.0.1:9001", f"127.0.0.1:{one}"),
        ("127.0.0.1:9002", f"127.0.0.1:{two}"),
        ("inter 2s", "inter 200ms"),
    ]:
        assert old in config, old
        config = config.replace(old, new)
    if two is None:
        config = "".join(line for line in config.splitlines(True) if "server two" not in line)
    if single is not None:
        config += SINGLE.format(single=single, one=one)
    return config


#: What the PROXY layer logs when it closes a connection.
COMPLAINTS = r"bad PROXY header|not an allowed PROXY balancer|no complete PROXY header"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HAProxy:
    """``haproxy -db -f CONFIG`` on its own configuration; stopped by its PID."""

    def __init__(self, directory: Path, **ports: int) -> None:
        self.stats = directory / "haproxy.sock"
        self.config = directory / "haproxy.cfg"
        self.config.write_text(documented_config(self.stats, **ports))
        self.output = directory / "haproxy.log"
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                [require_binary("haproxy"), "-db", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def servers(self) -> dict[str, str]:
        """``backend/server`` -> its last check's status (``L4OK``), from the stats socket."""
        if self.proc.poll() is not None:
            raise AssertionError(f"haproxy exited:\n{self.output.read_text()}")
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(str(self.stats))
                sock.sendall(b"show stat\n")
                text = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
        except OSError:
            return {}
        lines = text.splitlines()
        if not lines or not lines[0].startswith("# "):
            return {}
        fields = lines[0][2:].split(",")
        rows = [dict(zip(fields, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            f"{row['pxname']}/{row['svname']}": row["check_status"]
            for row in rows
            if row.get("svname") not in ("FRONTEND", "BACKEND")
        }

    def wait_healthy(self, count: int) -> None:
        """Until ``count`` servers have passed a health check (PROXY v2 LOCAL headers)."""

        def healthy() -> bool:
            statuses = self.servers()
            return len(statuses) == count and all(s == "L4OK" for s in statuses.values())

        wait_until(healthy, 20, f"haproxy's {count} servers healthy")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM to our own haproxy, by its PID
        self.proc.wait(timeout=10)


class From(Wire):
    """A files wire client connecting from loopback address ``source``."""

    def __init__(self, source: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=20, source_address=(source, 0)
        )
        if tls is not None:  # TLS from the client, passed through by HAProxy
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.buffer = b""

    @property
    def local(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"


class BehindHAProxyTests(E2ETestCase):
    """Two tcpfiles behind HAProxy: logs, per-peer limits and health checks."""

    def haproxy(self, **ports: int) -> HAProxy:
        balancer = HAProxy(self.tmp_path, **ports)
        self.addCleanup(balancer.stop)
        return balancer

    def files_server(
        self, *extra: str, listen: str = "haproxy:tcp:0:interface=127.0.0.1"
    ) -> Twistd:
        return self.start_server("--max-per-peer", "2", *extra, listen=listen)

    def test_real_clients_behind_haproxy(self) -> None:
        (self.root / "hello.txt").write_bytes(b"hello")
        one, two = self.files_server(), self.files_server()
        front, single = free_port(), free_port()
        balancer = self.haproxy(front=front, single=single, one=one.port, two=two.port)
        balancer.wait_healthy(3)

        # Round robin across both servers: each logs its clients' own addresses, and the via.
        locals_ = []
        for n in range(2, 6):
            client = From(f"127.0.0.{n}", front)
            self.assertEqual(client.get("hello.txt"), b"hello")
            locals_.append(client.local)
            client.close()
        digest = make_file(self.root / "big.bin", 8 << 20)
        for source in ("127.0.0.2", "127.0.0.3"):  # one from each server, sendfile and all
            client = From(source, front)
            client.send(b"GET big.bin\n")
            self.assertEqual(client.line(), b"OK %d" % (8 << 20))
            self.assertEqual(client.sha256_of_next(8 << 20), digest)
            client.close()
        for server in (one, two):  # round robin: two each
            server.wait_count(r"via=127\.0\.0\.1:\d+ GET hello\.txt -> OK", 2)
        both = one.text() + two.text()
        for address in locals_:
            self.assertRegex(both, rf"{re.escape(address)} via=127\.0\.0\.1:\d+ GET hello")

        # One server, limit 2 per peer: two clients with two connections each, and a third
        # client, all through the one balancer address, are served; a client's third is not.
        held = []
        for source in ("127.0.0.6", "127.0.0.6", "127.0.0.7", "127.0.0.7", "127.0.0.8"):
            client = From(source, single)
            self.addCleanup(client.close)
            self.assertEqual(client.get("hello.txt"), b"hello")
            held.append(client)
        third = From("127.0.0.6", single)
        self.addCleanup(third.close)
        self.assertEqual(third.line(), b"ERR busy too many connections from your address (limit 2)")
        one.wait_for(
            rf"refused {re.escape(third.local)} via=127\.0\.0\.1:\d+: too many "
            r"connections from your address \(limit 2\)"
        )

        # Health checks all along (v2 LOCAL headers, every 200 ms): still healthy, no complaint.
        balancer.wait_healthy(3)
        for server in (one, two):
            self.assertNotRegex(server.text(), COMPLAINTS)

    def test_tls_after_the_header(self) -> None:
        """haproxy:ssl: HAProxy passes TLS through; the header comes first, then TLS."""
        (self.root / "hello.txt").write_bytes(b"hello")
        pki = self.tmp_path / "pki"
        pki.mkdir()
        ca = make_ca(pki)
        pair = make_server_cert(pki, ca)
        listen = f"haproxy:ssl:0:interface=127.0.0.1:certKey={pair.cert}:privateKey={pair.key}"
        server = self.files_server(listen=listen)
        front = free_port()
        balancer = self.haproxy(front=front, one=server.port)
        balancer.wait_healthy(1)
        client = From("127.0.0.9", front, ssl.create_default_context(cafile=str(ca[0].cert)))
        self.addCleanup(client.close)
        self.assertEqual(client.get("hello.txt"), b"hello")
        server.wait_for(rf"{re.escape(client.local)} via=127\.0\.0\.1:\d+ GET hello\.txt -> OK")
        balancer.wait_healthy(1)
        self.assertNotRegex(server.text(), COMPLAINTS)


class ProxyListenerTests(E2ETestCase):
    """haproxy: listeners without a balancer: who is refused, and when."""

    def test_untrusted_source_and_late_header(self) -> None:
        (self.root / "hello.txt").write_bytes(b"hello")
        listen = "haproxy:tcp:0:interface=127.0.0.1"
        trusting_nobody = self.start_server("--proxy-from", "10.0.0.0/8", listen=listen)
        client = From("127.0.0.2", trusting_nobody.port)
        self.addCleanup(client.close)
        client.send(b"PROXY TCP4 203.0.113.5 192.0.2.1 5555 8888\r\nGET hello.txt\n")
        self.assertRaises(EOFError, client.line)
        trusting_nobody.wait_for(
            rf"{re.escape(client.local)}: not an allowed PROXY balancer \(--proxy-from\); closing"
        )

        impatient = self.start_server("--proxy-timeout", "0.5", listen=listen)
        slow = From("127.0.0.2", impatient.port)
        self.addCleanup(slow.close)
        slow.send(b"PROXY TCP4 203.0.113.5")
        self.assertRaises(EOFError, slow.line)
        impatient.wait_for(
            rf"{re.escape(slow.local)}: no complete PROXY header within 0\.5 s; closing"
        )
        on_time = From("127.0.0.3", impatient.port)
        self.addCleanup(on_time.close)
        on_time.send(b"PROXY TCP4 203.0.113.5 192.0.2.1 5555 8888\r\n")
        self.assertEqual(on_time.get("hello.txt"), b"hello")
        impatient.wait_for(rf"203\.0\.113\.5:5555 via={re.escape(on_time.local)} GET hello\.txt")

    def test_a_plain_listener_reads_no_header(self) -> None:
        (self.root / "hello.txt").write_bytes(b"hello")
        server = self.start_server()
        client = From("127.0.0.2", server.port)
        self.addCleanup(client.close)
        client.send(b"PROXY TCP4 203.0.113.5 192.0.2.1 5555 8888\r\n")
        self.assertTrue(client.line().startswith(b"ERR bad-request"))
        self.assertEqual(client.get("hello.txt"), b"hello")
        server.wait_for(rf"{re.escape(client.local)} GET hello\.txt -> OK")
        self.assertNotIn("via=", server.text())
