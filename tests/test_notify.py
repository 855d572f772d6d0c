"""Telling systemd how the server is (sd_notify): ready, alive, stopping; nothing when not asked."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport, _FakePort
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.compose import Serve, make_service
from tcpfiles.core.connections import ConnectionTracker
from tcpfiles.core.fdlimit import FdLimitCheck
from tcpfiles.core.notify import (
    Notifier,
    ReadinessService,
    describe_listeners,
    socket_address,
    watchdog_interval,
)
from tcpfiles.core.service import DrainingService, ListenerService
from tcpfiles.core.udp import UDPListenerService
from tcpfiles.testing import serve


class Sent:
    """A stand-in for the datagram socket: what was sent, or the error to raise."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []
        self.error: OSError | None = None

    def __call__(self, address: bytes, message: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.messages.append((address, message))

    def lines(self) -> list[list[str]]:
        return [message.decode().split("\n") for _, message in self.messages]


class Busy(Protocol):
    """A connection in the middle of something: asked to drain, it goes on."""

    def __init__(self) -> None:
        self.transport = StringTransport()

    def drain(self) -> None:
        pass


class UDPReactor(MemoryReactorClock):
    """A memory reactor that can also pretend to listen for datagrams."""

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 0):
        return _FakePort(IPv4Address("UDP", interface or "0.0.0.0", port))


def receiver(case: SynchronousTestCase, address: str | bytes) -> socket.socket:
    """A datagram socket bound at ``address``, standing in for systemd's; closed at cleanup."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    case.addCleanup(sock.close)
    sock.bind(address)
    sock.setblocking(False)
    return sock


def temporary_directory(case: SynchronousTestCase) -> str:
    path = tempfile.mkdtemp(prefix="tcpfiles-test-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


class EnvironmentTests(SynchronousTestCase):
    """What $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID ask for."""

    def test_socket_addresses(self) -> None:
        """A path as it is; @name is the abstract name; anything else is refused."""
        self.assertEqual(socket_address("/run/systemd/notify"), b"/run/systemd/notify")
        self.assertEqual(socket_address("@tcpfiles/notify"), b"\0tcpfiles/notify")
        for wrong in ("vsock:2:1234", "relative/path", "@", ""):
            self.assertRaises(ValueError, socket_address, wrong)

    def test_watchdog_interval_is_half_the_timeout_for_this_process(self) -> None:
        """Half of WATCHDOG_USEC, in seconds; none when unset, bad, zero or another pid's."""
        self.assertEqual(watchdog_interval({"WATCHDOG_USEC": "10000000"}, 42), 5.0)
        self.assertEqual(
            watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "42"}, 42), 0.1
        )
        for environ in (
            {},
            {"WATCHDOG_USEC": ""},
            {"WATCHDOG_USEC": "soon"},
            {"WATCHDOG_USEC": "0"},
            {"WATCHDOG_USEC": "-5"},
            {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "43"},
            {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "me"},
        ):
            self.assertIsNone(watchdog_interval(environ, 42), environ)

    def test_from_environ(self) -> None:
        """No service without NOTIFY_SOCKET; a warning and none for a socket we cannot use."""
        reactor = MemoryReactorClock()
        self.assertIsNone(ReadinessService.from_environ(reactor, {}))
        self.assertIsNone(ReadinessService.from_environ(reactor, {"NOTIFY_SOCKET": ""}))
        with capturedLogs() as events:
            self.assertIsNone(
                ReadinessService.from_environ(reactor, {"NOTIFY_SOCKET": "vsock:2:9"})
            )
        self.assertIn("not notifying the service manager", formatEvent(events[0]))
        environ = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "7"}
        readiness = ReadinessService.from_environ(reactor, environ, pid=7)
        assert readiness is not None
        self.assertEqual((readiness.notifier.address, readiness.watchdog), (b"\0x", 1.5))
        self.assertIsNone(ReadinessService.from_environ(reactor, environ, pid=8).watchdog)

    def test_the_process_environment_by_default(self) -> None:
        """Without an environ given, os.environ is read (what make_service relies on)."""
        self.patch(os, "environ", {"NOTIFY_SOCKET": "/run/x"})
        readiness = ReadinessService.from_environ(MemoryReactorClock())
        assert readiness is not None
        self.assertEqual((readiness.notifier.name, readiness.watchdog), ("/run/x", None))


class NotifierTests(SynchronousTestCase):
    """One message per datagram; trouble logged once, never raised."""

    def test_lines_make_one_message(self) -> None:
        """KEY=VALUE lines joined by newlines; a newline inside a value cannot add a line."""
        sent = Sent()
        self.assertTrue(Notifier("/run/n", sent).notify("READY=1", "STATUS=a\nWATCHDOG=1"))
        self.assertEqual(sent.messages, [(b"/run/n", b"READY=1\nSTATUS=a WATCHDOG=1")])

    def test_failures_are_logged_once_until_a_send_succeeds(self) -> None:
        """ECONNREFUSED (systemd gone) and EAGAIN (its queue full): False, one warning per spell."""
        sent = Sent()
        notifier = Notifier("/run/n", sent)
        with capturedLogs() as events:
            sent.error = ConnectionRefusedError(111, "Connection refused")
            self.assertFalse(notifier.notify("WATCHDOG=1"))
            self.assertFalse(notifier.notify("WATCHDOG=1"))
            sent.error = None
            self.assertTrue(notifier.notify("WATCHDOG=1"))
            sent.error = BlockingIOError(11, "Resource temporarily unavailable")
            self.assertFalse(notifier.notify("WATCHDOG=1"))
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                "cannot notify the service manager at /run/n: Connection refused",
                "cannot notify the service manager at /run/n: Resource temporarily unavailable",
            ],
        )

    def test_a_real_socket_by_path_and_an_abstract_one(self) -> None:
        """The default sender reaches a datagram socket bound at a path, and an abstract one."""
        path = os.path.join(temporary_directory(self), "notify.sock")
        abstract = f"tcpfiles-test-{uuid.uuid4().hex}"
        for name, bound in ((path, path), ("@" + abstract, b"\0" + abstract.encode())):
            sock = receiver(self, bound)
            self.assertTrue(Notifier(name).notify("READY=1", "STATUS=up"))
            self.assertEqual(sock.recv(4096), b"READY=1\nSTATUS=up")

    def test_nobody_listening_is_not_an_error(self) -> None:
        """A socket path with nothing bound there: False and a warning, no exception."""
        path = os.path.join(temporary_directory(self), "gone.sock")
        with capturedLogs() as events:
            self.assertFalse(Notifier(path).notify("READY=1"))
        self.assertIn(f"cannot notify the service manager at {path}", formatEvent(events[0]))


class ReadinessTests(SynchronousTestCase):
    """READY=1 after every listener, WATCHDOG=1 at the interval, STOPPING=1 when stopping."""

    def setUp(self) -> None:
        self.reactor = UDPReactor()
        self.sent = Sent()
        self.tracker = ConnectionTracker()
        self.top = DrainingService([self.tracker], 30, self.reactor)
        for description, label in (
            ("tcp:8888:interface=127.0.0.1", "files"),
            ("unix:/run/tcpfiles/files.sock", "files"),
            ("tcp:9000", "chat"),
        ):
            ListenerService(description, Factory(), self.reactor, label).setServiceParent(self.top)
        udp = UDPListenerService(
            "udp:7777:interface=127.0.0.1", DatagramProtocol(), self.reactor, "udp-echo"
        )
        udp.setServiceParent(self.top)

    def readiness(self, watchdog: float | None = None) -> ReadinessService:
        readiness = ReadinessService(Notifier("/run/n", self.sent), self.reactor, watchdog)
        readiness.setServiceParent(self.top)
        return readiness

    def test_ready_once_everything_listens_and_the_reactor_turns(self) -> None:
        """Nothing while starting; READY=1 on the next turn, with where each behaviour listens."""
        self.readiness()
        self.top.startService()
        self.assertEqual(len(self.reactor.tcpServers), 2)  # bound...
        self.assertEqual(self.sent.messages, [])  # ...but the reactor has not turned yet
        self.reactor.advance(0)
        self.assertEqual(
            self.sent.lines(),
            [
                [
                    "READY=1",
                    "STATUS=serving files on 0.0.0.0:8888, /run/tcpfiles/files.sock; "
                    "chat on 0.0.0.0:9000; udp-echo on udp 127.0.0.1:7777",
                ]
            ],
        )
        self.reactor.advance(3600)
        self.assertEqual(len(self.sent.messages), 1)  # no watchdog asked for: nothing more

    def test_watchdog_pings_until_the_stop_begins(self) -> None:
        """WATCHDOG=1 with READY's turn and every interval after; none once stopping."""
        self.readiness(watchdog=5.0)
        self.top.startService()
        self.reactor.advance(0)
        for _ in range(3):
            self.reactor.advance(5)
        self.assertEqual(
            [lines[0] for lines in self.sent.lines()], ["READY=1"] + ["WATCHDOG=1"] * 4
        )
        self.successResultOf(self.top.stopService())
        self.reactor.advance(60)
        self.assertEqual(self.sent.lines()[-1], ["STOPPING=1", "STATUS=stopping"])
        self.assertEqual(len(self.sent.messages), 6)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stopping_says_what_is_draining(self) -> None:
        """STOPPING=1 is sent as the stop begins, before the listeners close and connections
        drain, with how many connections may take how long."""
        self.readiness()
        self.top.startService()
        self.reactor.advance(0)
        busy = [Busy(), Busy()]
        for port, connection in enumerate(busy):
            self.tracker.opened(connection, IPv4Address("TCP", "127.0.0.1", 4000 + port))
        stopped = self.top.stopService()
        self.assertEqual(
            self.sent.lines()[-1],
            ["STOPPING=1", "STATUS=stopping: 2 connection(s) may take up to 30 s to finish"],
        )
        self.assertNoResult(stopped)
        self.reactor.advance(30)  # the grace period: what is left is dropped
        self.assertEqual([connection.transport.disconnecting for connection in busy], [True, True])
        for connection in busy:
            self.tracker.closed(connection)
        self.reactor.advance(0)
        self.successResultOf(stopped)

    def test_stopped_before_ready(self) -> None:
        """A stop in the same turn as the start: no READY=1 after it, no call left behind."""
        self.readiness(watchdog=1.0)
        self.top.startService()
        self.successResultOf(self.top.stopService())
        self.reactor.advance(10)
        self.assertEqual(self.sent.lines(), [["STOPPING=1", "STATUS=stopping"]])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_nothing_listening(self) -> None:
        """The status of a service without listeners says so."""
        self.assertEqual(describe_listeners([]), "serving nothing")


class ComposedTests(SynchronousTestCase):
    """make_service adds it (last) only when $NOTIFY_SOCKET asks; the testing kit leaves it out."""

    def setUp(self) -> None:
        self.root = temporary_directory(self)
        self.socket_path = os.path.join(self.root, "notify.sock")
        self.patch(FdLimitCheck, "privilegedStartService", lambda self: None)  # not ours to raise

    def test_without_notify_socket_there_is_none(self) -> None:
        """Unset: no ReadinessService among the children."""
        self.patch(os, "environ", {})
        top = make_service(MemoryReactorClock(), self.root, ["files"])
        self.assertFalse(any(isinstance(child, ReadinessService) for child in top))

    def test_make_service_tells_the_socket_once_listening(self) -> None:
        """Set: the last child; READY=1 reaches the socket after start, STOPPING=1 on stop."""
        sock = receiver(self, self.socket_path)
        self.patch(os, "environ", {"NOTIFY_SOCKET": self.socket_path})
        reactor = MemoryReactorClock()
        top = make_service(reactor, self.root, [Serve("files", ["tcp:8888:interface=127.0.0.1"])])
        self.assertIsInstance(list(top)[-1], ReadinessService)
        top.privilegedStartService()
        top.startService()
        reactor.advance(0)
        self.assertEqual(sock.recv(4096), b"READY=1\nSTATUS=serving files on 0.0.0.0:8888")
        self.successResultOf(top.stopService())
        self.assertEqual(sock.recv(4096), b"STOPPING=1\nSTATUS=stopping")

    def test_the_testing_kit_leaves_it_out(self) -> None:
        """serve() is not the service systemd manages, even under a NOTIFY_SOCKET."""
        sock = receiver(self, self.socket_path)
        self.patch(os, "environ", {"NOTIFY_SOCKET": self.socket_path})
        reactor = MemoryReactorClock()
        served = serve(reactor, ["echo"], self.root)
        self.assertFalse(any(isinstance(child, ReadinessService) for child in served.service))
        reactor.advance(0)
        self.successResultOf(served.stop())
        self.assertRaises(BlockingIOError, sock.recv, 4096)
