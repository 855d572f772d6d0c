"""The kernel's PROXY protocol layer: headers read strictly, then the real client everywhere."""

from __future__ import annotations

import socket
import struct
from typing import Any

from twisted.internet import interfaces, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.core.connections import RefusedProtocol, describe_peer
from tcpfiles.core.guard import GuardedProtocol
from tcpfiles.core.proxy import ProxyFactory, ProxyProtocol, ProxySettings, parse_networks
from tcpfiles.core.proxyendpoint import proxy_endpoint
from tcpfiles.core.proxyheader import V1_MAX, V2_SIGNATURE, ProxyHeaderError, read_header
from tcpfiles.core.service import ListenerService, check_server_string, with_backlog
from tcpfiles.testing import connect
from tests.guard_fakes import Busy, Polite, guard
from tests.helpers import temporary_directory

BALANCER = "127.0.0.1"
CLIENT = ("203.0.113.5", 5555)
FRONT = ("192.0.2.1", 8888)
V1 = b"PROXY TCP4 203.0.113.5 192.0.2.1 5555 8888\r\n"


def v2(
    command: int = 1,
    family: int = 1,
    source: tuple[str, int] = CLIENT,
    destination: tuple[str, int] = FRONT,
    tail: bytes = b"",
) -> bytes:
    """A version 2 header (``tail``: TLVs after the addresses)."""
    body = b""
    if command == 1 and family in (1, 2):
        kind = socket.AF_INET if family == 1 else socket.AF_INET6
        body = socket.inet_pton(kind, source[0]) + socket.inet_pton(kind, destination[0])
        body += struct.pack("!HH", source[1], destination[1])
    body += tail
    head = bytes([0x20 | command, (family << 4) | 1]) + len(body).to_bytes(2, "big")
    return V2_SIGNATURE + head + body


def proxied(wrapped: Any = None, clock: task.Clock | None = None, **settings: Any) -> ProxyFactory:
    """``wrapped`` (the guard around :class:`Plain` by default) behind the PROXY layer."""
    clock = clock or task.Clock()
    inner = wrapped if wrapped is not None else guard(clock=clock)
    return ProxyFactory(inner, clock, ProxySettings(**settings))


def feed(protocol: Any, data: bytes, byte_by_byte: bool) -> None:
    pieces = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
    for piece in pieces:
        protocol.dataReceived(piece)


class HeaderTests(SynchronousTestCase):
    """read_header: what is enough, what is accepted, what is refused."""

    def test_v1_tcp4_and_tcp6(self) -> None:
        header = read_header(V1 + b"GET x\n")
        assert header is not None
        self.assertEqual((header.size, header.command), (len(V1), "TCP4"))
        self.assertEqual(header.source, IPv4Address("TCP", *CLIENT))
        self.assertEqual(header.destination, IPv4Address("TCP", *FRONT))
        six = read_header(b"PROXY TCP6 2001:DB8:0::5 2001:db8::1 5555 8888\r\n")
        assert six is not None
        self.assertEqual(six.source, IPv6Address("TCP", "2001:db8::5", 5555))  # as usually spelt
        mapped = read_header(b"PROXY TCP6 ::ffff:203.0.113.5 ::1 5555 8888\r\n")
        assert mapped is not None
        self.assertEqual(mapped.source, IPv4Address("TCP", *CLIENT))

    def test_v2_tcp4_tcp6_and_mapped(self) -> None:
        header = read_header(v2(tail=b"\x04\x00\x01x"))  # a NOOP TLV after the addresses
        assert header is not None
        self.assertEqual(header.source, IPv4Address("TCP", *CLIENT))
        self.assertEqual(header.size, 16 + 12 + 4)
        six = read_header(v2(family=2, source=("2001:db8::5", 1), destination=("::1", 2)))
        assert six is not None
        self.assertEqual(six.source, IPv6Address("TCP", "2001:db8::5", 1))
        mapped = read_header(v2(family=2, source=("::ffff:203.0.113.5", 1), destination=("::1", 2)))
        assert mapped is not None
        self.assertEqual(mapped.source, IPv4Address("TCP", "203.0.113.5", 1))

    def test_headers_naming_no_client(self) -> None:
        """LOCAL (health checks), UNKNOWN, UNSPEC and UNIX leave the balancer's address."""
        for data, command in [
            (v2(command=0), "LOCAL"),
            (b"PROXY UNKNOWN\r\n", "UNKNOWN"),
            (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", "UNKNOWN"),
            (v2(family=0), "UNSPEC"),
            (v2(family=3, tail=bytes(216)), "UNIX"),
        ]:
            header = read_header(data)
            assert header is not None, data
            self.assertEqual(
                (header.command, header.source, header.size), (command, None, len(data))
            )

    def test_every_prefix_asks_for_more(self) -> None:
        for data in (V1, v2(), v2(command=0)):
            for end in range(len(data)):
                self.assertIsNone(read_header(data[:end]), data[:end])

    def test_refused(self) -> None:
        for data in [
            b"GET / HTTP/1.0\r\n",
            b"PROXY TCP4 203.0.113.5 192.0.2.1 5555\r\n",
            b"PROXY TCP4 203.0.113.05 192.0.2.1 5555 8888\r\n",
            b"PROXY TCP6 203.0.113.5 ::1 5555 8888\r\n",
            b"PROXY TCP4 203.0.113.\xff 192.0.2.1 5555 8888\r\n",
            b"PROXY TCP4 2001:db8::5 192.0.2.1 5555 8888\r\n",
            b"PROXY TCP4 203.0.113.5 192.0.2.1 5555 88888\r\n",
            b"PROXY TCP4 203.0.113.5 192.0.2.1 -1 8888\r\n",
            b"PROXY TCP5 203.0.113.5 192.0.2.1 5555 8888\r\n",
            b"PROXY TCP4 203.0.113.5 192.0.2.1 5555 8888\n",
            b"PROXY " + b"x" * V1_MAX,
            V2_SIGNATURE + b"\x10\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
            V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
            V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # too short for the addresses
            V2_SIGNATURE + b"\x21\x41\x00\x00",  # family 4
            V2_SIGNATURE + b"\x21\x11\xff\xff",  # 65 KiB announced: refused at once
        ]:
            self.assertRaises(ProxyHeaderError, read_header, data)

    def test_v1_bound(self) -> None:
        """107 bytes with CRLF pass; one more is too long."""
        line = b"PROXY UNKNOWN " + b"x" * (V1_MAX - 16) + b"\r\n"
        self.assertEqual(len(line), V1_MAX)
        self.assertIsNotNone(read_header(line))
        self.assertRaises(ProxyHeaderError, read_header, line[:-2] + b"x\r\n")


class LayerTests(SynchronousTestCase):
    """ProxyProtocol: the header, then the wrapped protocol with the real client."""

    def connect(self, factory: ProxyFactory, host: str = BALANCER, port: int = 40000) -> Any:
        return connect(factory, host=host, port=port)

    def test_v1_and_v2_whole_and_byte_by_byte(self) -> None:
        for header in (V1, v2(), v2(tail=b"\x04\x00\x02ab")):
            for byte_by_byte in (False, True):
                factory = proxied()
                proxy, transport = self.connect(factory)
                feed(proxy, header + b"hello", byte_by_byte)
                guarded = proxy.wrappedProtocol
                self.assertIsInstance(guarded, GuardedProtocol)
                plain = guarded.wrappedProtocol
                self.assertEqual(plain.received, b"hello")
                peer = plain.transport.getPeer()
                self.assertEqual((peer.host, peer.port), CLIENT)
                self.assertEqual(describe_peer(peer), "203.0.113.5:5555 via=127.0.0.1:40000")
                self.assertEqual(plain.transport.getHost(), IPv4Address("TCP", *FRONT))
                self.assertFalse(transport.disconnecting)
                plain.transport.write(b"out")
                self.assertEqual(transport.value(), b"out")

    def test_no_client_named_keeps_the_balancer(self) -> None:
        """LOCAL and UNKNOWN: a plain connection from the balancer."""
        for header in (v2(command=0), b"PROXY UNKNOWN\r\n"):
            proxy, transport = self.connect(proxied())
            feed(proxy, header + b"ping", byte_by_byte=True)
            plain = proxy.wrappedProtocol.wrappedProtocol
            self.assertEqual(plain.received, b"ping")
            self.assertEqual(plain.transport.getPeer(), IPv4Address("TCP", BALANCER, 40000))
            self.assertEqual(describe_peer(plain.transport.getPeer()), "127.0.0.1:40000")
            self.assertFalse(transport.disconnecting)

    def test_bad_header_closes_with_a_log_line(self) -> None:
        for data, why in [
            (b"GET / HTTP/1.0\r\n", "no PROXY header"),
            (b"PROXY " + b"x" * 200, "longer than 107 bytes"),
            (V2_SIGNATURE + b"\x21\x11\xff\xff", "at most 1024"),
        ]:
            proxy, transport = self.connect(proxied())
            with capturedLogs() as events:
                feed(proxy, data, byte_by_byte=True)
            self.assertTrue(transport.disconnecting)
            self.assertIsNone(proxy.wrappedProtocol)
            [line] = [formatEvent(e) for e in events]
            self.assertIn("127.0.0.1:40000: bad PROXY header", line)
            self.assertIn(why, line)

    def test_deadline(self) -> None:
        """No whole header within the deadline: closed; a header in time cancels it."""
        clock = task.Clock()
        proxy, transport = self.connect(proxied(clock=clock, deadline=5))
        proxy.dataReceived(V1[:10])
        clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        with capturedLogs() as events:
            clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertIn("no complete PROXY header within 5 s", formatEvent(events[0]))
        proxy.dataReceived(V1[10:])  # too late: ignored
        self.assertIsNone(proxy.wrappedProtocol)
        proxy.connectionLost(None)

        on_time, transport = self.connect(proxied(clock=clock, deadline=5))
        on_time.dataReceived(V1)
        self.assertEqual(clock.getDelayedCalls()[1:], [])  # only the guard's arming call is left
        clock.advance(10)
        self.assertFalse(transport.disconnecting)

    def test_lost_before_the_header(self) -> None:
        clock = task.Clock()
        proxy, _ = self.connect(proxied(clock=clock))
        proxy.dataReceived(b"PRO")
        proxy.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_disallowed_source_is_closed_unread(self) -> None:
        factory = proxied(allowed=parse_networks("10.0.0.0/8"))
        with capturedLogs() as events:
            protocol, transport = self.connect(factory, host="192.0.2.9")
        self.assertNotIsInstance(protocol, ProxyProtocol)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["192.0.2.9:40000: not an allowed PROXY balancer (--proxy-from); closing"],
        )
        allowed, transport = self.connect(factory, host="10.1.2.3")
        self.assertIsInstance(allowed, ProxyProtocol)
        self.assertFalse(transport.disconnecting)

    def test_allow_list(self) -> None:
        default = ProxySettings()
        self.assertTrue(default.allows(IPv4Address("TCP", "127.0.0.2", 1)))
        self.assertTrue(default.allows(IPv6Address("TCP", "::1", 1)))
        self.assertTrue(default.allows(IPv6Address("TCP", "::ffff:127.0.0.1", 1)))
        self.assertFalse(default.allows(IPv4Address("TCP", "192.0.2.1", 1)))
        nobody = ProxySettings(parse_networks("none"))
        self.assertFalse(nobody.allows(IPv4Address("TCP", "127.0.0.1", 1)))
        self.assertRaises(ValueError, parse_networks, "10.0.0.300")

    def test_half_close_reaches_the_behaviour(self) -> None:
        proxy, _ = self.connect(proxied(guard(Busy.forProtocol(Polite))))
        self.assertFalse(interfaces.IHalfCloseableProtocol.providedBy(proxy))
        proxy.dataReceived(v2())
        self.assertTrue(interfaces.IHalfCloseableProtocol.providedBy(proxy))
        proxy.readConnectionLost()
        self.assertEqual(proxy.wrappedProtocol.wrappedProtocol.asked, ["readConnectionLost"])

    def test_lost_reaches_the_behaviour(self) -> None:
        proxy, _ = self.connect(proxied())
        proxy.dataReceived(V1)
        plain = proxy.wrappedProtocol.wrappedProtocol
        proxy.connectionLost(None)
        self.assertTrue(plain.lost)


class RealClientTests(SynchronousTestCase):
    """The guard and the login limiter count the client, not the balancer."""

    def test_per_peer_limit_counts_real_clients(self) -> None:
        """Three clients through one balancer with 2 per peer: all in; a client's third: out."""
        clock = task.Clock()
        inner = guard(Busy(), clock=clock, max_per_peer=2)
        factory = proxied(inner, clock)
        for n in range(3):
            proxy, transport = connect(factory, host=BALANCER, port=40000 + n)
            proxy.dataReceived(v2(source=(f"203.0.113.{n + 1}", 5555)))
            self.assertIsInstance(proxy.wrappedProtocol, GuardedProtocol)
            self.assertFalse(transport.disconnecting)
        self.assertEqual(len(inner.tracker.active), 3)
        for port in (41000, 41001):  # a second and third from the first client
            proxy, transport = connect(factory, host=BALANCER, port=port)
            with capturedLogs() as events:
                proxy.dataReceived(v2(source=("203.0.113.1", port)))
        self.assertIsInstance(proxy.wrappedProtocol, RefusedProtocol)
        self.assertEqual(
            transport.value(), b"busy: too many connections from your address (limit 2)\n"
        )
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "refused 203.0.113.1:41001 via=127.0.0.1:41001: too many connections from "
                "your address (limit 2)"
            ],
        )

    def test_health_checks_count_under_the_balancer(self) -> None:
        clock = task.Clock()
        inner = guard(clock=clock, max_per_peer=2)
        factory = proxied(inner, clock)
        for port in (1, 2):
            proxy, _ = connect(factory, host=BALANCER, port=port)
            proxy.dataReceived(v2(command=0))
        self.assertEqual(sorted(inner.tracker.active.values()), [BALANCER, BALANCER])
        proxy, _ = connect(factory, host=BALANCER, port=3)
        proxy.dataReceived(v2())  # a client is counted on its own
        self.assertIsInstance(proxy.wrappedProtocol, GuardedProtocol)

    def test_login_limiter_keyed_on_the_real_client(self) -> None:
        from tests.files.test_accounts import ask, make

        tmp = temporary_directory(self)
        (tmp / "files" / "alice").mkdir(parents=True)
        users = tmp / "users"
        users.write_text("alice alice rw\n")
        clock = task.Clock()
        files = make((tmp / "files", users), clock=clock)
        factory = proxied(guard(files, clock=clock), clock)

        def login(client: str, port: int, line: bytes) -> list[bytes]:
            proxy, transport = connect(factory, host=BALANCER, port=port)
            proxy.dataReceived(v2(source=(client, port)))
            return ask(proxy, transport, line)

        for n in range(5):
            login("203.0.113.1", 100 + n, b"LOGIN user%d bad\n" % n)
        self.assertEqual(
            login("203.0.113.1", 200, b"LOGIN alice apw\n"),
            [b"ERR busy too many failed logins from your address; wait 60 s"],
        )
        self.assertEqual(login("198.51.100.1", 201, b"LOGIN alice apw\n"), [b"OK welcome alice"])


class EndpointTests(SynchronousTestCase):
    """haproxy: endpoint strings."""

    def test_kinds(self) -> None:
        check_server_string("haproxy:tcp:0:interface=127.0.0.1")
        check_server_string("haproxy:unix:/tmp/x.sock")
        with self.assertRaises(ValueError) as caught:
            proxy_endpoint(object(), "haproxy:stdio:")
        self.assertIn("haproxy:stdio: is not supported", str(caught.exception))

    def test_backlog_and_security(self) -> None:
        self.assertEqual(with_backlog("haproxy:tcp:80"), "haproxy:tcp:80:backlog=511")
        service = ListenerService("haproxy:tcp:0", guard(), task.Clock(), "files")
        self.assertEqual(service.security(), "PROXY header, then plain TCP")

    def test_listens_wrapped(self) -> None:
        """Each inner kind listens with the PROXY layer outermost; ssl with TLS beneath it."""
        from twisted.internet.testing import MemoryReactor
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from tests.e2e.certs import make_ca, make_server_cert

        reactor = MemoryReactor()
        inner = guard()
        proxy_endpoint(reactor, "haproxy:tcp:0").listen(inner)
        [(_, factory, _, _)] = reactor.tcpServers
        self.assertIsInstance(factory, ProxyFactory)
        self.assertIs(factory.wrappedFactory, inner)
        directory = temporary_directory(self)
        pair = make_server_cert(directory, make_ca(directory))
        cert, key = pair.cert, pair.key
        proxy_endpoint(reactor, f"haproxy:ssl:0:certKey={cert}:privateKey={key}").listen(inner)
        factory = reactor.tcpServers[1][1]
        self.assertIsInstance(factory, ProxyFactory)
        self.assertIsInstance(factory.wrappedFactory, TLSMemoryBIOFactory)
        self.assertIs(factory.wrappedFactory.wrappedFactory, inner)


class CommandLineTests(SynchronousTestCase):
    """--proxy-from and --proxy-timeout reach every haproxy: listener."""

    def test_options_reach_the_listeners(self) -> None:
        from twisted.internet.testing import MemoryReactorClock
        from twisted.python import usage

        from tcpfiles import tap

        root = str(temporary_directory(self))
        options = tap.Options()
        options.parseOptions(
            ["--root", root, "--listen", "haproxy:tcp:0", "--proxy-from", "10.0.0.0/8,::1"]
            + ["--proxy-timeout", "2", "--serve", "echo=haproxy:tcp:0"]
        )
        expected = ProxySettings(parse_networks("10.0.0.0/8,::1"), 2.0)
        top = tap.makeService(options, MemoryReactorClock())
        listeners = [child for child in top if isinstance(child, ListenerService)]
        self.assertEqual(len(listeners), 2)
        self.assertEqual({listener.proxy for listener in listeners}, {expected})
        defaults = tap.Options()
        defaults.parseOptions(["--root", root])
        self.assertEqual(defaults.proxy_settings(), ProxySettings())
        for bad in (["--proxy-from", "10.0.0.300"], ["--proxy-timeout", "0"]):
            with self.assertRaises(usage.UsageError):
                tap.Options().parseOptions(["--root", root, *bad])
