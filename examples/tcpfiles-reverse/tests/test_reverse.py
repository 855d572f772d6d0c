"""Tests of the reverse behaviour, written with tcpfiles' testing kit (tcpfiles.testing).

Run them from this directory: ``python -m twisted.trial tests`` (or ``pytest``).  The unit tests
build the behaviour as the server does, behind tcpfiles' guard, on a fake clock, and drive one
connection in memory; the end-to-end ones serve it on 127.0.0.1 with the real reactor.
"""

from __future__ import annotations

from tcpfiles.plugins.tcpfiles_reverse import reverse
from twisted.internet import reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpfiles.compose import Serve
from tcpfiles.testing import Connection, LineClient, Served, build_guarded, serve


class InMemoryTests(SynchronousTestCase):
    """One connection on a StringTransport; time is a fake clock."""

    def connect(self, options: dict[str, object] | None = None) -> Connection:
        """A connection to reverse built with these options, as on the command line."""
        self.clock = MemoryReactorClock()
        self.factory = build_guarded(reverse, options, clock=self.clock)
        return Connection(self.factory)

    def test_each_line_reversed_whole_and_byte_by_byte(self) -> None:
        for byte_by_byte in (False, True):
            connection = self.connect()
            answer = connection.exchange(b"hello\r\nabc\n", byte_by_byte=byte_by_byte)
            self.assertEqual(answer, b"olleh\ncba\n")

    def test_characters_not_bytes(self) -> None:
        connection = self.connect()
        self.assertEqual(connection.exchange("héllo\n".encode()), "olléh\n".encode())

    def test_a_line_too_long_is_refused_and_closed(self) -> None:
        connection = self.connect({"max-line": 8})
        self.assertEqual(connection.exchange(b"far too long\n"), b"line too long\n")
        self.assertTrue(connection.closing)

    def test_half_close_answers_then_closes(self) -> None:
        connection = self.connect()
        connection.feed(b"abc\n")
        connection.end_input()  # printf 'abc\n' | nc -N
        self.assertEqual((connection.written(), connection.closing), (b"cba\n", True))

    def test_the_idle_timeout_of_its_options(self) -> None:
        connection = self.connect({"idle-timeout": 30})
        connection.exchange(b"x\n")
        connection.advance(29.9)
        self.assertFalse(connection.closing)
        connection.advance(0.1)
        self.assertTrue(connection.closing)

    def test_draining_closes(self) -> None:
        connection = self.connect()
        self.factory.tracker.drain()  # what the server does on SIGTERM
        self.assertTrue(connection.closing)

    def test_one_connection_per_peer_when_told(self) -> None:
        connection = self.connect({"max-per-peer": 1})
        refused = Connection(self.factory)
        self.assertTrue(refused.closing)
        self.assertFalse(connection.closing)


class ServedTests(TestCase):
    """Served by tcpfiles' composition API on a free loopback port, with the real reactor."""

    async def connect(self, served: Served) -> LineClient:
        client = await LineClient.connect(reactor, served.port)
        self.addCleanup(client.close)
        return client

    async def test_answers_over_tcp(self) -> None:
        served = serve(reactor, [reverse])
        self.addCleanup(served.stop)
        client = await self.connect(served)
        client.send_line("héllo".encode())
        client.send_line(b"abc")
        self.assertEqual(await client.lines(2), ["olléh".encode(), b"cba"])

    async def test_a_client_that_half_closes_gets_its_answer(self) -> None:
        served = serve(reactor, [reverse])
        self.addCleanup(served.stop)
        client = await self.connect(served)
        client.send(b"abc\n")
        client.end_input()
        self.assertEqual(await client.rest(), b"cba\n")

    async def test_by_name_with_options_as_on_the_command_line(self) -> None:
        # by name: found as twistd finds it (installed, or this directory on sys.path)
        served = serve(reactor, [Serve("reverse", options={"max-line": 4})])
        self.addCleanup(served.stop)
        client = await self.connect(served)
        client.send_line(b"longer")
        self.assertEqual(await client.line(), b"line too long")

    async def test_connections_are_drained_on_stop(self) -> None:
        served = serve(reactor, [reverse])
        client = await self.connect(served)
        await served.stop()
        await client.closed(timeout=5)
