"""udp-echo on fake datagram transports and a Clock: loops refused, replies rate-limited."""

from __future__ import annotations

import errno
import shutil
import tempfile
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.core.plugin import Context
from tcpfiles.tap import Options as TapOptions
from tcpfiles.udp_echo.plugin import UDPEchoOptions, udp_echo
from tcpfiles.udp_echo.protocol import (
    EchoSettings,
    Rates,
    ReplyLimiter,
    TokenBucket,
    UDPEcho,
)

CLIENT = ("192.0.2.7", 40000)


class FakeDatagramTransport:
    """What a listening UDP port offers a DatagramProtocol: its address, and write()."""

    def __init__(self, host: str = "0.0.0.0", port: int = 7777, fails: int | None = None) -> None:
        self.host = IPv4Address("UDP", host, port)
        self.written: list[tuple[bytes, Any]] = []
        self.fails = fails

    def getHost(self) -> IPv4Address:
        return self.host

    def write(self, datagram: bytes, addr: Any) -> None:
        if self.fails is not None:
            raise OSError(self.fails, "refused by the kernel")
        self.written.append((datagram, addr))


def listening(
    settings: EchoSettings | None = None,
    host: str = "0.0.0.0",
    port: int = 7777,
    clock: Clock | None = None,
) -> tuple[UDPEcho, FakeDatagramTransport, Clock]:
    """A UDPEcho started on a fake transport bound to ``host:port``."""
    clock = clock or Clock()
    protocol = UDPEcho(clock, settings)
    transport = FakeDatagramTransport(host, port)
    protocol.makeConnection(transport)
    return protocol, transport, clock


def settings(**changes: Any) -> EchoSettings:
    """The default settings with some changed."""
    values = EchoSettings().__dict__ | changes
    return EchoSettings(**values)


def report_lines(events: list[dict[str, Any]]) -> list[str]:
    """The drop reports among captured log events."""
    return [formatEvent(e) for e in events if "dropped" in e.get("log_format", "")]


class EchoTests(SynchronousTestCase):
    """An ordinary datagram comes back unchanged."""

    def test_reply_is_the_request(self) -> None:
        """The reply is the datagram itself, to its sender: never larger than the request."""
        protocol, transport, _ = listening()
        for datagram in (b"", b"x", b"hello\x00\xff", b"z" * 65507):
            protocol.datagramReceived(datagram, CLIENT)
        self.assertEqual(
            transport.written,
            [(d, CLIENT) for d in (b"", b"x", b"hello\x00\xff", b"z" * 65507)],
        )


class LoopTests(SynchronousTestCase):
    """Datagrams that could start a loop are never answered."""

    def assertDropped(self, protocol: UDPEcho, transport: FakeDatagramTransport, addr: Any) -> None:
        before = protocol.drops.total["looped"]
        protocol.datagramReceived(b"ping", addr)
        self.assertEqual(transport.written, [])
        self.assertEqual(protocol.drops.total["looped"], before + 1)

    def test_from_itself(self) -> None:
        """A datagram from the service's own address and port is dropped."""
        protocol, transport, _ = listening(host="127.0.0.1", port=7777)
        self.assertDropped(protocol, transport, ("127.0.0.1", 7777))

    def test_wildcard_bound_any_local_address_with_our_port(self) -> None:
        """Bound to the wildcard, 127.0.0.0/8 or 0.0.0.0 with our port is ourselves: dropped."""
        protocol, transport, _ = listening(host="0.0.0.0", port=7777)
        for host in ("127.0.0.1", "127.3.2.1", "0.0.0.0"):
            self.assertDropped(protocol, transport, (host, 7777))

    def test_same_port_from_elsewhere(self) -> None:
        """Like inetd, our own port from any address is refused: two echoes on one port."""
        protocol, transport, _ = listening(host="192.0.2.1", port=7777)
        self.assertDropped(protocol, transport, ("198.51.100.9", 7777))

    def test_service_ports_below_1024(self) -> None:
        """Source ports 1..1023 (echo 7, daytime 13, chargen 19, dns 53) refused; 1024 answered."""
        protocol, transport, _ = listening()
        for port in (1, 7, 13, 19, 53, 1023):
            self.assertDropped(protocol, transport, ("192.0.2.7", port))
        protocol.datagramReceived(b"ok", ("192.0.2.7", 1024))
        self.assertEqual(transport.written, [(b"ok", ("192.0.2.7", 1024))])

    def test_port_zero_even_when_the_floor_is_off(self) -> None:
        """min-source-port 0 answers port 7, but port 0 is never answered."""
        protocol, transport, _ = listening(settings(min_source_port=0))
        self.assertDropped(protocol, transport, ("192.0.2.7", 0))
        protocol.datagramReceived(b"seven", ("192.0.2.7", 7))
        self.assertEqual(transport.written, [(b"seven", ("192.0.2.7", 7))])

    def test_configured_floor(self) -> None:
        """A higher min-source-port refuses everything below it."""
        protocol, transport, _ = listening(settings(min_source_port=5000))
        self.assertDropped(protocol, transport, ("192.0.2.7", 4999))
        protocol.datagramReceived(b"a", ("192.0.2.7", 5000))
        self.assertEqual(len(transport.written), 1)

    def test_no_reply_addresses(self) -> None:
        """Broadcast, multicast, class E and unspecified sources get no reply."""
        protocol, transport, _ = listening()
        for host in (
            "255.255.255.255",
            "224.0.0.1",
            "239.1.2.3",
            "240.0.0.1",
            "0.0.0.0",
            "ff02::1",
        ):
            self.assertDropped(protocol, transport, (host, 40000))

    def test_two_servers_on_one_port_never_bounce(self) -> None:
        """Two echoes on the same port, one crafted datagram: not a single reply."""
        a, a_transport, _ = listening(host="192.0.2.1", port=7)
        b, b_transport, _ = listening(host="192.0.2.2", port=7)
        a.datagramReceived(b"loop", ("192.0.2.2", 7))
        self.assertEqual(a_transport.written + b_transport.written, [])

    def test_two_servers_on_other_ports_stop_bouncing(self) -> None:
        """A loop between echoes on different ports dies once a bucket is empty (~burst)."""
        clock = Clock()
        a, a_transport, _ = listening(host="127.0.0.1", port=40001, clock=clock)
        b, b_transport, _ = listening(host="127.0.0.1", port=40002, clock=clock)
        deliveries = 0
        in_flight = [(a, b"loop", ("127.0.0.1", 40002))]
        while in_flight and deliveries < 100_000:
            target, datagram, source = in_flight.pop()
            deliveries += 1
            sent = a_transport if target is a else b_transport
            before = len(sent.written)
            target.datagramReceived(datagram, source)
            clock.advance(0.00003)  # a loopback round trip
            if len(sent.written) > before:
                other = b if target is a else a
                in_flight.append((other, datagram, (sent.host.host, sent.host.port)))
        capacity = EchoSettings().per_peer.reply_capacity
        self.assertLess(deliveries, 2 * capacity + 10)
        self.assertGreaterEqual(deliveries, 2 * capacity)
        self.assertEqual(a.drops.total["rate"] + b.drops.total["rate"], 1)


class MappedAddressTests(SynchronousTestCase):
    """A dual-stack socket sees IPv4 sources as ::ffff:a.b.c.d: judged as the IPv4 address."""

    def test_mapped_multicast_and_broadcast_refused(self) -> None:
        """::ffff:224.0.0.1 and ::ffff:255.255.255.255 are never answered; ::ffff:127.0.0.1 is."""
        from tcpfiles.udp_echo.protocol import refused_host

        self.assertTrue(refused_host("::ffff:224.0.0.1"))
        self.assertTrue(refused_host("::ffff:255.255.255.255"))
        self.assertTrue(refused_host("::ffff:0.0.0.0"))
        self.assertFalse(refused_host("::ffff:127.0.0.1"))


class SiblingTests(SynchronousTestCase):
    """One service on several ports: its echoes never answer each other and share the limits."""

    def test_sibling_ports_never_answer_each_other(self) -> None:
        """A datagram from port 7778 to the sibling on 7777 (and back) is dropped as a loop."""
        clock = Clock()
        first, first_transport, _ = listening(port=7777, clock=clock)
        second = first.sibling()
        second_transport = FakeDatagramTransport("0.0.0.0", 7778)
        second.makeConnection(second_transport)
        first.datagramReceived(b"ping", ("127.0.0.1", 7778))
        second.datagramReceived(b"ping", ("127.0.0.1", 7777))
        self.assertEqual(first_transport.written + second_transport.written, [])
        self.assertEqual(first.drops.total["looped"], 2)
        first.datagramReceived(b"hello", ("127.0.0.1", 40000))
        self.assertEqual(first_transport.written, [(b"hello", ("127.0.0.1", 40000))])

    def test_siblings_share_the_limits(self) -> None:
        """The per-address bucket is one for the service, not one per port."""
        first, first_transport, clock = listening(port=7777)
        second = first.sibling()
        second_transport = FakeDatagramTransport("0.0.0.0", 7778)
        second.makeConnection(second_transport)
        capacity = int(EchoSettings().per_peer.reply_capacity)
        for n in range(capacity):
            (first if n % 2 else second).datagramReceived(b"x", ("127.0.0.1", 40000))
        second.datagramReceived(b"x", ("127.0.0.1", 40000))
        self.assertEqual(len(first_transport.written) + len(second_transport.written), capacity)
        self.assertIs(first.limiter, second.limiter)

    def test_stopping_forgets_the_port(self) -> None:
        """A sibling that stops listening no longer counts as one of the service's ports."""
        first, _, _ = listening(port=7777)
        second = first.sibling()
        second.makeConnection(FakeDatagramTransport("0.0.0.0", 7778))
        second.doStop()
        self.assertEqual(first.own_ports, {7777})


class RateTests(SynchronousTestCase):
    """Replies are limited per source address and in total, in count and in bytes."""

    def test_per_peer_burst_then_rate(self) -> None:
        """One address gets the burst at once, then the steady rate as the clock moves."""
        rules = settings(per_peer=Rates(replies=10.0, nbytes=1 << 20, burst=2.0))
        protocol, transport, clock = listening(rules)
        for _ in range(25):
            protocol.datagramReceived(b"x", CLIENT)
        self.assertEqual(len(transport.written), 20)
        self.assertEqual(protocol.drops.total["rate"], 5)
        clock.advance(0.5)
        for _ in range(10):
            protocol.datagramReceived(b"x", CLIENT)
        self.assertEqual(len(transport.written), 25)

    def test_over_rate_peer_does_not_starve_others(self) -> None:
        """A flooding address spends its own bucket only: another address is still answered."""
        rules = settings(per_peer=Rates(replies=5.0, nbytes=1 << 20, burst=1.0))
        protocol, transport, _ = listening(rules)
        for _ in range(1000):
            protocol.datagramReceived(b"x", CLIENT)
        protocol.datagramReceived(b"y", ("192.0.2.8", 40000))
        self.assertEqual(transport.written[-1], (b"y", ("192.0.2.8", 40000)))
        self.assertEqual(len(transport.written), 6)

    def test_total_rate_across_many_sources(self) -> None:
        """Spoofed sources each under their own limit still meet the total limit."""
        rules = settings(total=Rates(replies=50.0, nbytes=1 << 30, burst=1.0))
        protocol, transport, clock = listening(rules)
        for n in range(500):
            protocol.datagramReceived(b"x", (f"10.0.{n // 250}.{n % 250}", 40000))
        self.assertEqual(len(transport.written), 50)
        self.assertEqual(protocol.drops.total["rate"], 450)
        clock.advance(0.2)
        for n in range(100):
            protocol.datagramReceived(b"x", (f"10.1.0.{n}", 40000))
        self.assertEqual(len(transport.written), 60)

    def test_bytes_per_peer(self) -> None:
        """Large datagrams meet the byte limit before the reply limit."""
        rules = settings(per_peer=Rates(replies=100.0, nbytes=10_000, burst=1.0))
        protocol, transport, clock = listening(rules)
        for _ in range(5):
            protocol.datagramReceived(b"z" * 4000, CLIENT)
        self.assertEqual(len(transport.written), 2)
        clock.advance(0.4)
        protocol.datagramReceived(b"z" * 4000, CLIENT)
        self.assertEqual(len(transport.written), 3)

    def test_bytes_in_total(self) -> None:
        """The total byte bucket caps what many addresses get together."""
        rules = settings(total=Rates(replies=10_000.0, nbytes=100_000, burst=1.0))
        protocol, transport, _ = listening(rules)
        for n in range(10):
            protocol.datagramReceived(b"z" * 30_000, (f"10.0.0.{n}", 40000))
        self.assertEqual(len(transport.written), 3)

    def test_refused_peer_does_not_spend_the_total(self) -> None:
        """A drop spends nothing: neither the total nor the address's own bucket."""
        limiter = ReplyLimiter(
            Clock(), Rates(2.0, 1 << 20, 1.0), Rates(3.0, 1 << 20, 1.0), max_peers=10
        )
        results = [limiter.allow("10.0.0.1", 1) for _ in range(5)]
        self.assertEqual(results, [True, True, False, False, False])
        self.assertTrue(limiter.allow("10.0.0.2", 1))
        self.assertFalse(limiter.allow("10.0.0.3", 1))

    def test_clock_going_back_earns_nothing(self) -> None:
        """A wall clock stepping backwards neither refills nor breaks a bucket."""
        bucket = TokenBucket(Rates(1.0, 100.0, 1.0), now=1000.0)
        bucket.spend(1)
        bucket.refill(10.0)
        self.assertFalse(bucket.allows(1, 10.0))
        self.assertTrue(bucket.allows(1, 1001.0))


class PeerTableTests(SynchronousTestCase):
    """The per-address table stays bounded however many sources are spoofed."""

    def test_capped(self) -> None:
        """Never more than max-peers addresses, the least recently seen forgotten first."""
        protocol, _, _ = listening(settings(max_peers=100))
        for n in range(5000):
            protocol.datagramReceived(b"x", (f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", 4000))
            self.assertLessEqual(len(protocol.limiter.peers), 100)
        self.assertIn("10.0.19.135", protocol.limiter.peers)
        self.assertNotIn("10.0.0.0", protocol.limiter.peers)

    def test_idle_entries_expire(self) -> None:
        """An address idle for the burst time is forgotten (its bucket would be full again)."""
        protocol, _, clock = listening()
        for n in range(50):
            protocol.datagramReceived(b"x", (f"10.0.0.{n}", 4000))
        clock.advance(1.9)
        protocol.datagramReceived(b"x", ("10.0.0.0", 4000))
        clock.advance(0.2)
        protocol.datagramReceived(b"x", ("10.0.1.1", 4000))
        self.assertEqual(set(protocol.limiter.peers), {"10.0.0.0", "10.0.1.1"})

    def test_forgetting_gives_no_extra_replies(self) -> None:
        """An address whose bucket was emptied is not forgotten before it is full again."""
        rules = settings(per_peer=Rates(replies=1.0, nbytes=1 << 20, burst=2.0))
        protocol, transport, clock = listening(rules)
        for _ in range(3):
            protocol.datagramReceived(b"x", CLIENT)
        clock.advance(1.0)
        protocol.datagramReceived(b"x", ("10.9.9.9", 4000))  # a newcomer triggers expiry
        for _ in range(3):
            protocol.datagramReceived(b"x", CLIENT)
        self.assertEqual([a for _, a in transport.written].count(CLIENT), 3)


class ReportTests(SynchronousTestCase):
    """Drops are silent on the wire, counted, and logged once per interval."""

    def test_one_line_per_interval(self) -> None:
        """Thousands of drops in an interval make one log line with the counts by reason."""
        rules = settings(per_peer=Rates(replies=10.0, nbytes=1 << 20, burst=1.0))
        protocol, transport, clock = listening(rules)
        with capturedLogs() as events:
            for _ in range(1000):
                protocol.datagramReceived(b"x", CLIENT)
            for _ in range(7):
                protocol.datagramReceived(b"x", ("127.0.0.1", 7777))
            self.assertEqual(report_lines(events), [])
            clock.advance(9.9)
            self.assertEqual(report_lines(events), [])
            clock.advance(0.1)
        self.assertEqual(
            report_lines(events),
            ["udp-echo dropped 997 datagrams (990 rate, 7 looped, 0 failed) in the last 10 s"],
        )
        self.assertEqual(len(transport.written), 10)

    def test_quiet_when_nothing_dropped(self) -> None:
        """No drops, no report and nothing scheduled."""
        protocol, _, clock = listening()
        with capturedLogs() as events:
            protocol.datagramReceived(b"x", CLIENT)
            clock.advance(60)
        self.assertEqual(report_lines(events), [])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_next_interval_counts_afresh(self) -> None:
        """After a report the counts restart; a later drop makes a later, separate line."""
        protocol, _, clock = listening(settings(log_interval=2.0))
        with capturedLogs() as events:
            protocol.datagramReceived(b"x", ("192.0.2.7", 7))
            clock.advance(2)
            clock.advance(30)
            protocol.datagramReceived(b"x", ("192.0.2.7", 0))
            protocol.datagramReceived(b"x", ("192.0.2.7", 19))
            clock.advance(2)
        self.assertEqual(
            report_lines(events),
            [
                "udp-echo dropped 1 datagrams (0 rate, 1 looped, 0 failed) in the last 2 s",
                "udp-echo dropped 2 datagrams (0 rate, 2 looped, 0 failed) in the last 2 s",
            ],
        )

    def test_stop_reports_and_leaves_nothing_scheduled(self) -> None:
        """Stopping logs what was counted and cancels the pending report."""
        protocol, _, clock = listening()
        with capturedLogs() as events:
            protocol.datagramReceived(b"x", ("192.0.2.7", 7))
            protocol.doStop()
        self.assertEqual(len(report_lines(events)), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_send_error_is_a_counted_drop(self) -> None:
        """A send the kernel refuses (full buffer, broadcast) is counted, never raised."""
        protocol = UDPEcho(Clock())
        transport = FakeDatagramTransport(fails=errno.EAGAIN)
        protocol.makeConnection(transport)
        protocol.datagramReceived(b"x", CLIENT)
        transport.fails = errno.EACCES
        protocol.datagramReceived(b"x", ("192.0.2.255", 40000))
        self.assertEqual(protocol.drops.total["failed"], 2)


class OptionTests(SynchronousTestCase):
    """udp-echo's own options, alone and prefixed on the twistd command line."""

    def test_defaults(self) -> None:
        """The defaults: service ports refused, 100/s per address, 10,000/s in total."""
        options = UDPEchoOptions()
        options.parseOptions([])
        self.assertEqual(options.settings(), EchoSettings())
        self.assertEqual(EchoSettings().per_peer.replies, 100.0)
        self.assertEqual(EchoSettings().total.replies, 10_000.0)

    def test_parsed(self) -> None:
        """Each option lands in the settings."""
        options = UDPEchoOptions()
        options.parseOptions(
            ["--min-source-port", "0", "--peer-rate", "5", "--peer-bytes", "64K"]
            + ["--total-rate", "50", "--total-bytes", "1M", "--burst", "3"]
            + ["--max-peers", "7", "--log-interval", "1.5"]
        )
        self.assertEqual(
            options.settings(),
            EchoSettings(
                min_source_port=0,
                per_peer=Rates(5.0, 65536, 3.0),
                total=Rates(50.0, 1 << 20, 3.0),
                max_peers=7,
                log_interval=1.5,
            ),
        )

    def test_bad_values(self) -> None:
        """Out-of-range values are usage errors."""
        for argv in (
            ["--min-source-port", "65536"],
            ["--min-source-port", "-1"],
            ["--peer-rate", "0"],
            ["--max-peers", "0"],
            ["--log-interval", "-1"],
        ):
            with self.assertRaises(usage.UsageError):
                UDPEchoOptions().parseOptions(argv)

    def test_prefixed_on_the_tap(self) -> None:
        """``--udp-echo-min-source-port`` reaches the behaviour, which builds with the reactor."""
        root = tempfile.mkdtemp()  # not trial's mktemp: under pytest it writes into the tree
        self.addCleanup(shutil.rmtree, root)
        options = TapOptions()
        options.parseOptions(
            ["--root", root, "--serve", "udp-echo=udp:0", "--udp-echo-min-source-port", "0"]
            + ["--udp-echo-peer-rate", "7"]
        )
        own = options["serving"]["udp-echo"][1]
        clock = Clock()
        built = udp_echo.build(own, Context(clock, None))
        self.assertIsInstance(built, UDPEcho)
        self.assertEqual(built.settings.min_source_port, 0)
        self.assertEqual(built.settings.per_peer.replies, 7.0)
        self.assertIs(built.limiter.clock, clock)
