"""A real twistd under a stand-in for systemd: a datagram socket the test binds as NOTIFY_SOCKET.

What systemd's ``Type=notify`` and ``WatchdogSec=`` rely on (docs/operations.md): READY=1 only
once the port accepts connections, WATCHDOG=1 at half of WATCHDOG_USEC while serving, and
STOPPING=1 when SIGTERM starts the shutdown.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Wire

#: What the tests' own environment might carry from a real service manager: never inherited.
MANAGER_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class StandIn:
    """The service manager's end: a datagram socket bound in a temporary directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.received: list[dict[str, str]] = []

    def next(self, timeout: float = 20.0) -> dict[str, str]:
        """The next message, as {KEY: VALUE}; fails if none comes within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            raise AssertionError(
                f"no notification in {timeout} s; so far {self.received}"
            ) from None
        message = dict(line.split("=", 1) for line in data.decode().split("\n"))
        self.received.append(message)
        return message

    def rest(self) -> list[dict[str, str]]:
        """Every message already queued (the server has exited: nothing more will come)."""
        left: list[dict[str, str]] = []
        self.sock.setblocking(False)
        for _ in range(10_000):
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return left
            left.append(dict(line.split("=", 1) for line in data.decode().split("\n")))
        raise AssertionError("more than 10000 notifications")

    def close(self) -> None:
        self.sock.close()


class ReadinessTests(E2ETestCase):
    """twistd -n tcpfiles with NOTIFY_SOCKET set, as systemd starts a Type=notify unit."""

    def manager(self, **variables: str) -> tuple[StandIn, dict[str, str]]:
        """A stand-in socket, and the environment that points a server at it."""
        stand_in = StandIn(str(self.tmp_path / "notify.sock"))
        self.addCleanup(stand_in.close)
        env = {k: v for k, v in os.environ.items() if k not in MANAGER_VARIABLES}
        return stand_in, {**env, "NOTIFY_SOCKET": stand_in.path, **variables}

    def test_ready_once_listening_and_stopping_on_sigterm(self) -> None:
        """READY=1 names the bound ports, which answer at once; SIGTERM sends STOPPING=1 with
        what is left to drain (and nothing else: no watchdog was asked for)."""
        (self.root / "notes.txt").write_bytes(b"hello\n")
        stand_in, env = self.manager()
        server = self.start_server("--serve", "echo=tcp:0:interface=127.0.0.1", env=env)
        ready = stand_in.next()
        self.assertEqual(ready["READY"], "1")
        where = re.fullmatch(
            r"serving files on 127\.0\.0\.1:(\d+); echo on 127\.0\.0\.1:(\d+)", ready["STATUS"]
        )
        assert where is not None, ready
        self.assertEqual(int(where.group(1)), server.port)
        wire = Wire(int(where.group(1)))  # READY=1 came after the bind: it accepts and answers
        self.addCleanup(wire.close)
        self.assertEqual(wire.get("notes.txt"), b"hello\n")
        self.assertIn(server.stop(), (0, -signal.SIGTERM))  # the connection, idle, closes
        stopping = "stopping: 1 connection(s) may take up to 30 s to finish"
        self.assertEqual(stand_in.rest(), [{"STOPPING": "1", "STATUS": stopping}])

    def test_watchdog_pings_at_half_the_interval_until_stopping(self) -> None:
        """WATCHDOG_USEC=200000: pings come every 0.1 s after READY=1 (five within 10 s); none
        after STOPPING=1."""
        stand_in, env = self.manager(WATCHDOG_USEC="200000")
        server = self.start_server(env=env)
        self.assertEqual(stand_in.next()["READY"], "1")
        started = time.monotonic()
        for _ in range(5):
            self.assertEqual(stand_in.next(timeout=10), {"WATCHDOG": "1"})
        self.assertLess(time.monotonic() - started, 10)
        self.assertIn(server.stop(), (0, -signal.SIGTERM))
        rest = stand_in.rest()
        self.assertEqual(rest[-1], {"STOPPING": "1", "STATUS": "stopping"})
        self.assertEqual(rest[:-1], [{"WATCHDOG": "1"}] * (len(rest) - 1))

    def test_a_watchdog_meant_for_another_process_is_not_fed(self) -> None:
        """WATCHDOG_PID names another process: READY=1 and STOPPING=1 only."""
        stand_in, env = self.manager(WATCHDOG_USEC="200000", WATCHDOG_PID="1")
        server = self.start_server(env=env)
        self.assertEqual(stand_in.next()["READY"], "1")
        self.assertIn(server.stop(), (0, -signal.SIGTERM))
        self.assertEqual(stand_in.rest(), [{"STOPPING": "1", "STATUS": "stopping"}])
