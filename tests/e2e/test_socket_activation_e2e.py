"""systemd socket activation, with systemd's own stand-in (``systemd-socket-activate``): a
``systemd:`` endpoint serves the socket it is given, by name, in one process or in workers; without
names (what systemd before 227 and ``systemd-socket-activate`` without ``--fdname`` pass) the
error says so."""

from __future__ import annotations

import re
import signal
import socket
import subprocess

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Wire, script
from tests.external import require_binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_and_wait_closed(port: int) -> None:
    """Connect (which starts the server) and wait until it closes the connection (reset, or
    the end): a server that cannot start exits with the socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
        client.settimeout(30)
        try:
            while client.recv(1024):
                pass
        except ConnectionResetError:
            pass


class SocketActivationTests(E2ETestCase):
    def activate(
        self, *activate: str, listen: str, extra: tuple[str, ...] = ()
    ) -> tuple[subprocess.Popen[str], int]:
        """``systemd-socket-activate -l 127.0.0.1:PORT ACTIVATE twistd -n tcpfiles --listen
        LISTEN``, started at the first connection (the test makes it)."""
        port = free_port()
        command = [
            require_binary("systemd-socket-activate"),
            "-l",
            f"127.0.0.1:{port}",
            *activate,
            script("twistd"),
            "-n",
            "--pidfile=",
            "tcpfiles",
            "--root",
            str(self.root),
            "--listen",
            listen,
            *extra,
        ]
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        assert proc.stdout is not None
        for _ in range(20):  # "Listening on 127.0.0.1:PORT as 3."
            if "Listening on" in proc.stdout.readline():
                break
        return proc, port

    def test_a_named_socket_is_served(self) -> None:
        (self.root / "a.txt").write_bytes(b"hello\n")
        proc, port = self.activate("--fdname=files", listen="systemd:domain=INET:name=files")
        wire = Wire(port)
        self.assertEqual(wire.get("a.txt"), b"hello\n")
        wire.close()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        self.assertIn(proc.returncode, (0, -signal.SIGTERM))
        self.assertIn(f"files listening on 127.0.0.1:{port} (systemd: endpoint)", output)
        self.assertIn("GET a.txt -> OK", output)

    def test_sockets_without_names_are_explained(self) -> None:
        proc, port = self.activate(listen="systemd:domain=INET:index=0")
        start_and_wait_closed(port)
        output, _ = proc.communicate(timeout=30)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("systemd passed a socket (descriptor 3) without its name", output)
        self.assertIn("--fdname=NAME", output)
        self.assertNotIn("list index out of range", output)

    def test_workers_share_a_socket_from_systemd(self) -> None:
        """--workers 2 on a systemd: endpoint: the parent takes the socket systemd passed and
        hands it to its workers, which parse the same endpoint string and serve it."""
        (self.root / "a.txt").write_bytes(b"hello\n")
        proc, port = self.activate(
            "--fdname=files", listen="systemd:domain=INET:name=files", extra=("--workers", "2")
        )
        for _ in range(10):
            wire = Wire(port)
            self.assertEqual(wire.get("a.txt"), b"hello\n")
            wire.close()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        self.assertIn(proc.returncode, (0, -signal.SIGTERM), output)
        self.assertRegex(output, r"started worker 2 \(pid \d+\)")
        self.assertRegex(
            output,
            rf"\[worker \d tcpfiles\.core\.service#info\] files listening on 127\.0\.0\.1:{port}",
        )
        self.assertEqual(
            len(re.findall(r"\[worker \d tcpfiles\.files#info\] .* GET a\.txt", output)), 10
        )
        self.assertNotIn("Traceback", output)
