"""The kernel's guard around every stream behaviour: limits, the idle timeout, draining."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.core.connections import RefusedProtocol
from tcpfiles.core.guard import CLOSE_WITHIN, GuardedProtocol, kernel_idle_timeout
from tests.guard_fakes import Busy, Plain, Polite, Stubborn, connect, guard


class LimitsTests(SynchronousTestCase):
    """Per-peer and total limits, for any factory."""

    def test_per_peer_limit_refuses_with_the_factorys_words(self) -> None:
        """Past max_per_peer the connection is told refusal_message(reason), then closed."""
        factory = guard(Busy(), max_per_peer=2)
        connect(factory, port=1)
        connect(factory, port=2)
        with capturedLogs() as events:
            refused, transport = connect(factory, port=3)
        self.assertIsInstance(refused, RefusedProtocol)
        self.assertEqual(
            transport.value(), b"busy: too many connections from your address (limit 2)\n"
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "refused 192.0.2.7:3: too many connections from your address (limit 2)",
            ],
        )
        connect(factory, host="192.0.2.8")  # another address is still welcome

    def test_plain_factory_is_limited_and_refused_silently(self) -> None:
        """A plain IProtocolFactory gets the same limits; without words the close is silent."""
        factory = guard(max_per_peer=1)
        first, _ = connect(factory, port=1)
        refused, transport = connect(factory, port=2)
        self.assertIsInstance(refused, RefusedProtocol)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        first.connectionLost(None)
        self.assertIsInstance(connect(factory, port=3)[0], GuardedProtocol)

    def test_total_limit(self) -> None:
        """Past max_connections nobody else gets in, whatever the address."""
        factory = guard(Busy(), max_connections=2)
        connect(factory, host="192.0.2.1")
        connect(factory, host="192.0.2.2")
        refused, transport = connect(factory, host="192.0.2.3")
        self.assertIsInstance(refused, RefusedProtocol)
        self.assertEqual(transport.value(), b"busy: too many connections (2 in total)\n")

    def test_a_factory_that_refuses_by_itself(self) -> None:
        """A wrapped factory returning None refuses the connection; nothing is counted."""
        inner = Factory.forProtocol(Plain)
        inner.buildProtocol = lambda addr: None  # type: ignore[method-assign]
        factory = guard(inner)
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1)))
        self.assertEqual(factory.tracker.active, {})

    def test_counted_once_and_forgotten_once(self) -> None:
        """Each connection is counted while it lasts, by the guard alone."""
        factory = guard()
        first, _ = connect(factory, port=1)
        second, _ = connect(factory, port=2)
        self.assertEqual(set(factory.tracker.active), {first, second})
        first.connectionLost(None)
        first.connectionLost(None)  # twice: forgotten once
        self.assertEqual(set(factory.tracker.active), {second})


class IdleTests(SynchronousTestCase):
    """No byte either way and no producer for the idle timeout: the connection is closed."""

    def setUp(self) -> None:
        self.clock = task.Clock()

    def test_silence_closes_a_plain_protocol(self) -> None:
        """Without a timed_out hook the guard closes the connection itself."""
        protocol, transport = connect(guard(clock=self.clock, idle_timeout=10))
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_a_protocol_can_ask_what_the_guard_keeps(self) -> None:
        """kernel_idle_timeout: the guard's period for the protocol's transport; None outside."""
        protocol, transport = connect(guard(clock=self.clock, idle_timeout=10))
        assert kernel_idle_timeout(protocol.wrappedProtocol.transport) == 10
        assert kernel_idle_timeout(transport) is None

    def test_reads_and_writes_are_activity(self) -> None:
        """A byte in or out pushes the timeout back by a whole period."""
        protocol, transport = connect(guard(clock=self.clock, idle_timeout=10))
        self.clock.advance(6)
        protocol.dataReceived(b"x")  # read at 6
        self.clock.advance(9)
        self.assertFalse(transport.disconnecting)
        protocol.wrappedProtocol.transport.write(b"y")  # written at 15
        self.clock.advance(9.5)
        self.assertFalse(transport.disconnecting)
        protocol.wrappedProtocol.transport.writeSequence([b"a", b"b"])  # at 24.5
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(protocol.wrappedProtocol.received, b"x")

    def test_one_timer_per_connection_re_armed_lazily(self) -> None:
        """Traffic does not touch the timer: it waits for what is left when it fires."""
        protocol, _ = connect(guard(clock=self.clock, idle_timeout=10))
        self.clock.advance(1)  # the connection has lasted a second: it has its timer
        (call,) = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 10)
        for _ in range(100):
            protocol.dataReceived(b"x")
        self.assertEqual(self.clock.getDelayedCalls(), [call])
        self.assertEqual(call.getTime(), 10)

    def test_short_connections_never_get_a_timer(self) -> None:
        """Connections of the same second share one call that arms their timers; those gone
        by then never had one, and with none left open that call is cancelled."""
        factory = guard(clock=self.clock, idle_timeout=10)
        short = [connect(factory, port=n)[0] for n in range(50)]
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        for protocol in short[1:]:
            protocol.connectionLost(None)
        self.clock.advance(1)
        (call,) = self.clock.getDelayedCalls()  # the one still open
        self.assertEqual(call.getTime(), 10)
        short[0].connectionLost(None)
        for protocol in [connect(factory, port=n)[0] for n in range(3)]:
            protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_short_idle_timeout_is_armed_in_time(self) -> None:
        """Below two seconds the timers are armed within half the timeout."""
        protocol, transport = connect(guard(clock=self.clock, idle_timeout=0.5))
        self.clock.advance(0.25)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.25)
        self.assertTrue(transport.disconnecting)

    def test_a_registered_producer_is_not_idle(self) -> None:
        """A producer at work (a body being sent) keeps the connection; idleness counts from
        when it is unregistered."""
        protocol, transport = connect(guard(clock=self.clock, idle_timeout=10))
        inner = protocol.wrappedProtocol.transport
        inner.registerProducer(object(), False)
        self.clock.advance(35)
        self.assertFalse(transport.disconnecting)
        inner.unregisterProducer()  # at 35
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_backpressure_registration_is_not_work(self) -> None:
        """The transport or the protocol registered as its own producer (echo, chat) does not
        keep a silent connection open."""
        for own in ("transport", "protocol"):
            protocol, transport = connect(guard(clock=self.clock, idle_timeout=10))
            inner = protocol.wrappedProtocol
            producer = inner.transport if own == "transport" else inner
            inner.transport.registerProducer(producer, True)
            self.clock.advance(10)
            self.assertTrue(transport.disconnecting, own)

    def test_the_hook_says_goodbye(self) -> None:
        """With timed_out() the protocol closes in its own words, and only it is called."""
        protocol, transport = connect(
            guard(Factory.forProtocol(Polite), self.clock, idle_timeout=5)
        )
        polite = protocol.wrappedProtocol
        self.clock.advance(5)
        self.assertEqual(polite.asked, ["timed_out"])
        self.assertEqual(transport.value(), b"bye: idle\n")
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(None)
        self.assertTrue(polite.lost)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_not_closed_within_the_bound_is_aborted(self) -> None:
        """A timed-out connection that has not closed CLOSE_WITHIN seconds later is aborted."""
        protocol, transport = connect(
            guard(Factory.forProtocol(Stubborn), self.clock, idle_timeout=5)
        )
        self.clock.advance(5)
        self.assertEqual(transport.value(), b"bye\n")
        self.assertFalse(transport.disconnecting)
        with capturedLogs() as events:
            self.clock.advance(CLOSE_WITHIN)
        self.assertTrue(transport.disconnected)  # StringTransport's mark of abortConnection
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["192.0.2.7:40000: still open 10 s after its idle timeout; dropping it"],
        )

    def test_closing_in_time_cancels_the_bound(self) -> None:
        """A connection lost before the bound leaves no timer behind."""
        protocol, transport = connect(guard(clock=self.clock, idle_timeout=5))
        self.clock.advance(5)
        self.assertTrue(transport.disconnecting)
        self.clock.advance(CLOSE_WITHIN - 1)
        protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(transport.disconnected)

    def test_lost_before_the_timeout_leaves_no_timer(self) -> None:
        """connectionLost cancels the idle timer."""
        protocol, _ = connect(guard(clock=self.clock, idle_timeout=5))
        protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DrainTests(SynchronousTestCase):
    """On shutdown the tracker asks each protocol to drain, or closes it."""

    def test_drain_asks_the_protocol(self) -> None:
        """A protocol with drain() finishes in its own way; the Deferred fires when it is gone."""
        factory = guard(Factory.forProtocol(Polite))
        protocol, transport = connect(factory)
        drained = factory.tracker.drain()
        self.assertEqual(protocol.wrappedProtocol.asked, ["drain"])
        self.assertEqual(transport.value(), b"bye: shutting down\n")
        self.assertNoResult(drained)
        protocol.connectionLost(None)
        self.successResultOf(drained)

    def test_drain_closes_a_protocol_without_drain(self) -> None:
        """A plain protocol is closed at once."""
        factory = guard()
        protocol, transport = connect(factory)
        factory.tracker.drain()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_while_draining_new_connections_are_refused(self) -> None:
        """A connection that arrives during the grace period is refused with the reason."""
        factory = guard(Busy())
        factory.tracker.drain()
        refused, transport = connect(factory)
        self.assertIsInstance(refused, RefusedProtocol)
        self.assertEqual(transport.value(), b"busy: the server is shutting down\n")

    def test_abort_all_reaches_the_real_transport(self) -> None:
        """The grace period's end drops connections through the real transport."""
        factory = guard()
        _, transport = connect(factory)
        factory.tracker.abort_all()
        self.assertTrue(transport.disconnected)
