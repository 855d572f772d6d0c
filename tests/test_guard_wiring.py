"""The kernel's guard stays transparent to what protocols look at (half-close, TLS, the real
socket beneath it), and how it is set up: settings from options, what the tap listens with."""

from __future__ import annotations

import socket

from twisted.internet import interfaces, task, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from tcpfiles.core.connections import ConnectionTracker
from tcpfiles.core.guard import ConnectionSettings, GuardedFactory, beneath, guard_stream
from tcpfiles.core.plugin import ConnectionOptions
from tcpfiles.core.sending import adapt_read_size, can_send_now, send_now, write_paced
from tcpfiles.core.tls import can_half_close, is_tls_transport
from tests.guard_fakes import Plain, Polite, connect, guard


class ProtocolWithLog(Plain):
    def logPrefix(self) -> str:
        return "reverser"


class TransparencyTests(SynchronousTestCase):
    """What a protocol looks at on its transport still works through the guard."""

    def test_half_close_is_forwarded_only_to_a_protocol_that_takes_it(self) -> None:
        """Twisted half-closes only protocols that provide IHalfCloseableProtocol: the guard
        provides it exactly when the wrapped protocol does."""
        polite, _ = connect(guard(Factory.forProtocol(Polite)))
        plain, _ = connect(guard())
        self.assertTrue(interfaces.IHalfCloseableProtocol.providedBy(polite))
        self.assertFalse(interfaces.IHalfCloseableProtocol.providedBy(plain))
        polite.readConnectionLost()
        polite.writeConnectionLost()
        self.assertEqual(
            polite.wrappedProtocol.asked, ["readConnectionLost", "writeConnectionLost"]
        )

    def test_the_transports_interfaces_and_attributes(self) -> None:
        """TLS is still seen as TLS (and not half-closeable); the peer, abortConnection,
        bufferSize and SEND_LIMIT are the real transport's."""
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.9", 9))
        directlyProvides(transport, interfaces.INegotiated)
        transport.loseWriteConnection = lambda: None  # type: ignore[attr-defined]
        transport.bufferSize = 65536  # type: ignore[attr-defined]
        protocol = guard().buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        seen = protocol.wrappedProtocol.transport
        self.assertIs(seen, protocol)
        self.assertTrue(is_tls_transport(seen))
        self.assertFalse(can_half_close(seen))
        self.assertEqual(seen.getPeer(), IPv4Address("TCP", "192.0.2.9", 9))
        seen.bufferSize = 131072
        self.assertEqual((transport.bufferSize, seen.bufferSize), (131072, 131072))
        seen.SEND_LIMIT = 1 << 20
        self.assertEqual(transport.SEND_LIMIT, 1 << 20)  # type: ignore[attr-defined]
        seen.abortConnection()
        self.assertTrue(transport.disconnected)
        self.assertTrue(seen.disconnecting)

    def test_plain_tcp_can_half_close_through_the_guard(self) -> None:
        """A plain transport with loseWriteConnection stays half-closeable."""
        transport = StringTransport()
        transport.loseWriteConnection = lambda: None  # type: ignore[attr-defined]
        protocol = guard().buildProtocol(None)
        protocol.makeConnection(transport)
        self.assertFalse(is_tls_transport(protocol))
        self.assertTrue(can_half_close(protocol))

    def test_log_prefixes_are_the_wrapped_ones(self) -> None:
        """Log lines read as without the guard (the port logs with the factory's prefix)."""
        inner = Factory.forProtocol(ProtocolWithLog)
        factory = guard(inner)
        self.assertEqual(factory.logPrefix(), inner.logPrefix())
        self.assertEqual(connect(factory)[0].logPrefix(), "reverser")
        self.assertEqual(connect(guard())[0].logPrefix(), "Plain")
        self.assertFalse(factory.noisy)


class RealSocketTests(SynchronousTestCase):
    """sending.py's fast paths under the guard, on Twisted's TCP connection over a socketpair."""

    def setUp(self) -> None:
        ours, self.theirs = socket.socketpair()
        ours.setblocking(False)
        self.addCleanup(ours.close)
        self.addCleanup(self.theirs.close)
        self.clock = task.Clock()
        self.guarded = guard(clock=self.clock, idle_timeout=10).buildProtocol(None)
        self.connection = _Connection(ours, self.guarded, reactor=MemoryReactor())
        self.connection.connected = 1
        self.guarded.makeConnection(self.connection)
        self.seen = self.guarded.wrappedProtocol.transport

    def test_sendmsg_beneath_the_guard_counts_as_traffic(self) -> None:
        """send_now still goes straight to the socket, and the guard hears of it."""
        self.assertIs(beneath(self.seen), self.connection)
        self.assertTrue(can_send_now(self.seen))
        self.clock.advance(9)
        self.assertTrue(send_now(self.seen, b"OK 3\n", b"abc"))
        self.assertEqual(self.theirs.recv(100), b"OK 3\nabc")
        self.clock.advance(9)
        self.assertFalse(self.connection.disconnecting)
        self.successResultOf(write_paced(self.seen, b"more"))
        self.clock.advance(9.9)
        self.assertFalse(self.connection.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(self.connection.disconnecting)

    def test_read_size_adapts_on_the_real_connection(self) -> None:
        """adapt_read_size sees the TCP connection beneath the guard."""
        size = self.connection.bufferSize
        adapt_read_size(self.seen, size)
        self.assertEqual(self.connection.bufferSize, size * 2)


class _Connection(tcp.Connection):
    """tcp.Connection with a peer (Server has one; the base class does not)."""

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 1)


class SettingsTests(SynchronousTestCase):
    """ConnectionSettings from a behaviour's parsed options."""

    def test_from_connection_options(self) -> None:
        """The three --NAME-... settings every behaviour has."""
        options = ConnectionOptions()
        options.parseOptions(["--idle-timeout", "7.5", "--max-per-peer", "3"])
        self.assertEqual(ConnectionSettings.from_options(options), ConnectionSettings(7.5, 3, 1024))

    def test_options_without_them_still_get_limits(self) -> None:
        """A third-party Options without ConnectionOptions gets the defaults."""

        class Bare(usage.Options):
            optParameters = [["max-line", None, 100, "Longest line.", int]]

        options = Bare()
        options.parseOptions([])
        self.assertEqual(
            ConnectionSettings.from_options(options), ConnectionSettings(300.0, 64, 1024)
        )


class GuardStreamTests(SynchronousTestCase):
    """What the tap listens with."""

    def test_a_stream_factory_is_guarded_and_its_tracker_kept(self) -> None:
        trackers: list[ConnectionTracker] = []
        inner = Factory.forProtocol(Plain)
        served = guard_stream(inner, ConnectionSettings(max_connections=5), task.Clock(), trackers)
        self.assertIsInstance(served, GuardedFactory)
        self.assertIs(served.wrappedFactory, inner)
        self.assertEqual(trackers, [served.tracker])
        self.assertEqual(served.tracker.max_total, 5)

    def test_already_guarded_is_not_guarded_twice(self) -> None:
        trackers: list[ConnectionTracker] = []
        already = guard()
        self.assertIs(guard_stream(already, ConnectionSettings(), task.Clock(), trackers), already)
        self.assertIs(guard_stream(already, ConnectionSettings(), task.Clock(), trackers), already)
        self.assertEqual(trackers, [already.tracker])

    def test_a_datagram_protocol_is_left_alone(self) -> None:
        trackers: list[ConnectionTracker] = []
        datagram = DatagramProtocol()
        self.assertIs(
            guard_stream(datagram, ConnectionSettings(), task.Clock(), trackers), datagram
        )
        self.assertEqual(trackers, [])
