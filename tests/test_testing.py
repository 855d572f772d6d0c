"""The public testing kit, tcpfiles.testing: each piece does what docs/testing.md says.

Trial classes, run by pytest and by ``python -m twisted.trial tests.test_testing`` alike; the
one plain function first is a pytest-twisted test, so that under pytest the asynchronous trial
cases below always run after one (tests/conftest.py hands the reactor over to them).
"""

from __future__ import annotations

import os
import shutil
import socket
import socketserver
import tempfile
import threading
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.basic import LineOnlyReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpfiles.compose import Serve
from tcpfiles.core.connections import RefusedProtocol
from tcpfiles.core.guard import GuardedFactory
from tcpfiles.core.plugin import Behaviour, ConnectionOptions, Context
from tcpfiles.core.service import ListenerService
from tcpfiles.echo.plugin import echo
from tcpfiles.files.client import FilesClient, RemoteError
from tcpfiles.files.client_protocol import ConnectionClosed
from tcpfiles.files.server import Limits
from tcpfiles.files.transfer import Session, fetch
from tcpfiles.testing import (
    BlockingLineClient,
    Connection,
    LineClient,
    PausingTransport,
    ReactorState,
    StubFiles,
    assert_clean,
    build_guarded,
    client_pair,
    connect,
    files_factory,
    guarded,
    pump,
    respond,
    serve,
    settle,
)


class TellProtocol(LineOnlyReceiver):
    """Answers each line with ``<prefix> <line>``; says ``bye`` when drained."""

    delimiter = b"\n"
    factory: TellFactory

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(self.factory.prefix + b" " + line)

    def drain(self) -> None:
        self.sendLine(b"bye")
        self.transport.loseConnection()


class TellFactory(Factory):
    protocol = TellProtocol

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix

    def refusal_message(self, reason: str) -> bytes:
        return b"busy: " + reason.encode() + b"\n"


class TellOptions(ConnectionOptions):
    optParameters = [["prefix", None, "you said", "What each answer starts with."]]


#: A third-party behaviour, never installed: the kit takes it as an object.
tell = Behaviour(
    "tell",
    "answers each line",
    "tcp:7795",
    TellOptions,
    lambda options, context: TellFactory(options["prefix"].encode()),
)


def temporary_root(case: SynchronousTestCase, files: dict[str, bytes]) -> str:
    root = tempfile.mkdtemp()
    case.addCleanup(shutil.rmtree, root)
    for name, data in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    return root


class BuildGuardedTests(SynchronousTestCase):
    """A behaviour built from options as the server does, behind the kernel's guard."""

    def test_options_and_the_guard_come_from_the_mapping(self) -> None:
        factory = build_guarded(tell, {"prefix": "ok", "max-per-peer": 2, "idle-timeout": 7})
        self.assertIsInstance(factory, GuardedFactory)
        self.assertIsInstance(factory.clock, MemoryReactorClock)
        self.assertEqual(factory.wrappedFactory.prefix, b"ok")
        self.assertEqual((factory.settings.max_per_peer, factory.settings.idle_timeout), (2, 7))

    def test_by_name_with_a_context_whose_reactor_is_the_clock(self) -> None:
        clock = task.Clock()
        factory = build_guarded("echo", context=Context(reactor=clock, root=None))
        self.assertIs(factory.clock, clock)
        self.assertEqual(Connection(factory).exchange(b"hi"), b"hi")

    def test_what_cannot_be_built_says_so(self) -> None:
        with self.assertRaisesRegex(ValueError, "tell: .*colour"):
            build_guarded(tell, {"colour": "red"})
        with self.assertRaisesRegex(TypeError, "udp-echo is a datagram behaviour"):
            build_guarded("udp-echo")


class ConnectionTests(SynchronousTestCase):
    """One connection in memory: bytes in whole or one at a time, the guard's promises."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.factory = build_guarded(
            tell, {"idle-timeout": 10, "max-per-peer": 1}, clock=self.clock
        )

    def test_whole_and_byte_by_byte(self) -> None:
        for byte_by_byte in (False, True):
            connection = Connection(self.factory, peer=(f"192.0.2.{byte_by_byte + 1}", 4000))
            answer = connection.exchange(b"a\nb\n", byte_by_byte=byte_by_byte)
            self.assertEqual(answer, b"you said a\nyou said b\n")
            connection.feed(b"c\n")
            self.assertEqual((connection.written(), connection.take()), (b"you said c\n",) * 2)
            self.assertEqual(connection.written(), b"")

    def test_the_idle_timeout_runs_on_the_clock(self) -> None:
        connection = Connection(self.factory)
        self.assertIs(connection.clock, self.clock)
        connection.advance(9.9)
        self.assertFalse(connection.closing)
        connection.advance(0.1)
        self.assertTrue(connection.closing)

    def test_limits_refuse_in_the_behaviours_words_and_losing_frees_the_place(self) -> None:
        first = Connection(self.factory)
        second = Connection(self.factory)
        self.assertIsInstance(second.protocol, RefusedProtocol)
        self.assertEqual(
            second.written(), b"busy: too many connections from your address (limit 1)\n"
        )
        self.assertTrue(second.closing)
        first.lose()
        first.lose()  # once only
        self.assertEqual(len(self.factory.tracker.active), 0)
        self.assertNotIsInstance(Connection(self.factory).protocol, RefusedProtocol)

    def test_draining_asks_the_protocol(self) -> None:
        connection = Connection(self.factory)
        self.factory.tracker.drain()
        self.assertEqual(connection.written(), b"bye\n")
        self.assertTrue(connection.closing)

    def test_end_input_half_closes_only_a_half_closeable_protocol(self) -> None:
        echoing = Connection(build_guarded(echo))
        echoing.feed(b"last")
        echoing.end_input()  # echo is IHalfCloseableProtocol: it flushes, then closes
        self.assertEqual((echoing.written(), echoing.closing), (b"last", True))
        telling = Connection(self.factory)
        telling.end_input()  # not half-closeable: Twisted would call connectionLost
        self.assertEqual(len(self.factory.tracker.active), 0)
        with self.assertRaisesRegex(AssertionError, "connection is lost"):
            telling.feed(b"x")

    def test_no_clock_to_advance(self) -> None:
        connection = Connection(Factory.forProtocol(Protocol))
        with self.assertRaisesRegex(AssertionError, "no clock"):
            connection.advance(1)


class PullOnce:
    """A pull producer that writes ``count`` chunks, one per resumeProducing, then stops."""

    def __init__(self, transport: StringTransport, count: int) -> None:
        self.transport = transport
        self.count = count

    def resumeProducing(self) -> None:
        self.transport.write(b"x")
        self.count -= 1
        if not self.count:
            self.transport.unregisterProducer()

    def stopProducing(self) -> None:
        pass


class PushRecorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        self.events.append("stop")


class FunctionTests(SynchronousTestCase):
    """The same moves as functions: connect, respond, pump, guarded, PausingTransport."""

    def test_connect_gives_the_protocol_and_its_transport(self) -> None:
        protocol, transport = connect(guarded(TellFactory(b"t")), "192.0.2.9", 1234)
        self.assertEqual(transport.getPeer().host, "192.0.2.9")
        self.assertEqual(respond(protocol, transport, b"x\n", byte_by_byte=True), b"t x\n")
        refusing = Factory.forProtocol(Protocol)
        refusing.buildProtocol = lambda addr: None  # type: ignore[method-assign]
        with self.assertRaisesRegex(ValueError, "refused the connection"):
            connect(refusing)

    def test_guarded_takes_settings_and_the_factorys_clock(self) -> None:
        factory = TellFactory(b"t")
        factory.clock = task.Clock()  # type: ignore[attr-defined]
        wrapped = guarded(factory, idle_timeout=3)
        self.assertIs(wrapped.clock, factory.clock)  # type: ignore[attr-defined]
        self.assertEqual(wrapped.settings.idle_timeout, 3)

    def test_pump_pulls_a_pull_producer_to_the_end_and_leaves_push_ones(self) -> None:
        transport = StringTransport()
        transport.registerProducer(PullOnce(transport, 3), False)
        pump(transport)
        self.assertEqual((transport.value(), transport.producer), (b"xxx", None))
        transport.registerProducer(PullOnce(transport, 5), False)
        with self.assertRaisesRegex(AssertionError, "never finished"):
            pump(transport, limit=2)
        transport.unregisterProducer()
        push = PushRecorder()
        transport.registerProducer(push, True)
        pump(transport)
        self.assertEqual(push.events, [])

    def test_pausing_transport_pauses_past_its_limit_and_resumes_when_drained(self) -> None:
        transport = PausingTransport(4)
        push = PushRecorder()
        transport.registerProducer(push, True)
        transport.write(b"1234")
        self.assertEqual(push.events, [])
        transport.write(b"5")
        self.assertEqual(push.events, ["pause"])
        transport.drain()
        self.assertEqual((push.events, transport.value()), (["pause", "resume"], b""))


class StubFilesTests(SynchronousTestCase):
    """Real files clients against a real files server, in memory."""

    def setUp(self) -> None:
        self.root = temporary_root(self, {"a.txt": b"hello", "big.bin": os.urandom(300_000)})
        self.stub = StubFiles.serving(self.root, writable=True)

    def test_the_client_api(self) -> None:
        client = self.stub.client()
        self.assertIsInstance(client, FilesClient)
        info = self.stub.result_of(client.stat("a.txt"))
        self.assertEqual(info.size, 5)
        names = [entry.name for entry in self.stub.result_of(client.list())]
        self.assertEqual(sorted(names), ["a.txt", "big.bin"])
        chunks: list[bytes] = []
        self.assertEqual(self.stub.result_of(client.get("big.bin", chunks.append)), 300_000)
        with open(os.path.join(self.root, "big.bin"), "rb") as f:
            self.assertEqual(b"".join(chunks), f.read())
        with self.assertRaises(RemoteError):
            self.stub.result_of(client.stat("nope"))

    def test_code_that_takes_a_client_or_a_connector(self) -> None:
        destination = os.path.join(self.root, "copy.txt")
        client = self.stub.client()
        self.stub.result_of(fetch(client, "a.txt", destination))
        with open(destination, "rb") as f:
            self.assertEqual(f.read(), b"hello")
        session = Session(self.stub.clock, "stub", connector=self.stub.connect)
        listing = self.stub.result_of(session.run(lambda c, retried: c.list()))
        self.assertIn("copy.txt", [entry.name for entry in listing])

    def test_each_client_is_its_own_connection_under_the_guard(self) -> None:
        stub = StubFiles.serving(self.root, limits=Limits(idle_timeout=30, max_per_peer=1))
        first = stub.client()
        second = stub.client()
        self.assertTrue(second.protocol.closed)  # refused by the guard, past max-per-peer
        with self.assertRaises(ConnectionClosed):
            stub.result_of(second.stat("a.txt"))
        stub.clock.advance(31)  # the idle timeout of the guard
        stub.flush()
        self.assertTrue(first.protocol.closed)

    def test_result_of_a_deferred_that_never_fires(self) -> None:
        with self.assertRaisesRegex(AssertionError, "has not fired"):
            self.stub.result_of(defer.Deferred())

    def test_client_pair_and_settle(self) -> None:
        client, pump_ = client_pair(files_factory(self.root))
        self.assertEqual(settle(client.stat("a.txt"), pump_).size, 5)
        self.assertTrue(settle(client.stat("nope"), pump_).check(RemoteError))
        never: defer.Deferred[None] = defer.Deferred()
        with self.assertRaisesRegex(AssertionError, "no answer"):
            settle(never, pump_, limit=3)


class CleanTests(SynchronousTestCase):
    """assert_clean: what a test left behind on a clock or a reactor."""

    def test_a_leaked_call_is_named_and_cancelled(self) -> None:
        clock = task.Clock()
        assert_clean(clock)
        call = clock.callLater(5, lambda: None)
        with self.assertRaisesRegex(AssertionError, "leaked DelayedCalls: .*lambda"):
            assert_clean(clock)
        self.assertFalse(call.active())
        kept = clock.callLater(5, lambda: None)
        assert_clean(clock, cancel=False, since=ReactorState.of(clock))
        self.assertTrue(kept.active())

    def test_only_what_came_since(self) -> None:
        reactor = MemoryReactorClock()
        reactor.callLater(1, lambda: None)
        reactor.addReader("old")  # type: ignore[arg-type]
        since = ReactorState.of(reactor)
        reactor.addReader("new")  # type: ignore[arg-type]
        reactor.addWriter("out")  # type: ignore[arg-type]
        with self.assertRaises(AssertionError) as raised:
            assert_clean(reactor, since=since)
        self.assertEqual(
            str(raised.exception), "leaked readers: [\"'new'\"]\nleaked writers: [\"'out'\"]"
        )
        assert_clean(reactor, since=since, descriptors=False)

    def test_a_reactors_own_descriptors_are_not_leaks(self) -> None:
        from twisted.internet import reactor

        self.assertNotIn(reactor.waker, ReactorState.of(reactor).readers)  # type: ignore[attr-defined]


class ServeTests(TestCase):
    """serve(): composed as twistd would, on free loopback ports of the real reactor."""

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor

    async def test_each_behaviour_on_its_port_then_drained_on_stop(self) -> None:
        served = serve(self.reactor, [echo, Serve(tell, options={"prefix": "p"}), "udp-echo"])
        self.addCleanup(served.stop)
        self.assertEqual(sorted(served.ports), ["echo", "tell", "udp-echo"])
        self.assertEqual(served.port, served.port_of("echo"))
        self.assertTrue(os.path.isdir(served.root))
        echoing = await LineClient.connect(self.reactor, served.port_of("echo"))
        telling = await LineClient.connect(self.reactor, served.port_of("tell"))
        telling.send_line(b"x")
        self.assertEqual(await telling.line(), b"p x")
        await served.stop()
        self.assertEqual(await telling.line(), b"bye")  # drained in its own words
        await telling.closed(timeout=5)
        await echoing.closed(timeout=5)
        self.assertFalse(os.path.exists(served.root))  # the temporary root is gone
        self.assertIsNone(await served.stop())  # again: the same outcome
        with self.assertRaises(KeyError):
            served.port_of("chat")

    async def test_a_given_root_and_accounts_settings(self) -> None:
        root = temporary_root(self, {"a.txt": b"hello"})
        served = serve(self.reactor, ["files"], root, writable=True)
        self.addCleanup(served.stop)
        client = await LineClient.connect(self.reactor, served.port)
        self.addCleanup(client.close)
        client.send_line(b"GET a.txt")
        self.assertEqual(await client.line(), b"OK 5")
        client.send_line(b"MKDIR new")
        self.assertEqual(await client.line(), b"hello" + b"OK created")
        await served.stop()
        self.assertTrue(os.path.isdir(os.path.join(root, "new")))  # kept: not a temporary one

    async def test_tls_makes_the_free_ports_tls_ones(self) -> None:
        from tests.e2e.certs import make_ca, make_server_cert

        directory = Path(temporary_root(self, {}))
        pair = make_server_cert(directory, make_ca(directory))
        served = serve(self.reactor, ["echo", "udp-echo"], tls=(str(pair.cert), str(pair.key)))
        self.addCleanup(served.stop)
        listeners = [c for c in served.service if isinstance(c, ListenerService)]
        self.assertEqual([c.security() for c in listeners], ["TLS"])
        self.assertEqual(sorted(served.ports), ["echo", "udp-echo"])
        await served.stop()

    async def test_a_failed_start_leaves_nothing_open(self) -> None:
        await task.deferLater(self.reactor, 0, lambda: None)  # after trial's own timeout call
        before = ReactorState.of(self.reactor)
        taken = serve(self.reactor, [echo])
        self.addCleanup(taken.stop)
        in_use = Serve(tell, [f"tcp:{taken.port}:interface=127.0.0.1"])
        with self.assertRaisesRegex(Exception, "tell: cannot listen on tcp:"):
            serve(self.reactor, [echo, in_use])
        with self.assertRaisesRegex(ValueError, "no such behaviour"):
            serve(self.reactor, ["nope"])
        await taken.stop()
        await task.deferLater(self.reactor, 0, lambda: None)  # ports close a turn later
        assert_clean(self.reactor, since=before)


class LineClientTests(TestCase):
    """LineClient: lines with a timeout, the end of the connection, half-close."""

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.served = serve(reactor, [echo, tell])
        self.addCleanup(self.served.stop)

    async def client(self, name: str, timeout: float = 10.0) -> LineClient:
        port = self.served.port_of(name)
        client = await LineClient.connect(self.reactor, port, timeout=timeout)
        self.addCleanup(client.close)
        return client

    async def test_lines_in_order_and_a_timeout_that_says_what_came(self) -> None:
        client = await self.client("tell", timeout=0.2)
        client.send(b"a\nb\nc")
        self.assertEqual(await client.lines(2), [b"you said a", b"you said b"])
        with self.assertRaisesRegex(TimeoutError, r"no line within 0.2 s; unread: b''"):
            await client.line()
        with self.assertRaisesRegex(TimeoutError, "still open"):
            await client.closed(timeout=0.05)
        self.assertEqual(client.received, b"you said a\nyou said b\n")

    async def test_half_close_and_the_rest(self) -> None:
        client = await self.client("echo")
        client.send(b"one\ntwo")
        self.assertEqual(await client.line(), b"one")
        client.end_input()  # echo is half-closeable: it echoes what is left, then closes
        self.assertEqual(await client.rest(), b"two")
        with self.assertRaisesRegex(EOFError, "the server closed"):
            await client.line()

    async def test_a_read_waiting_when_the_server_closes(self) -> None:
        client = await self.client("tell")
        waiting = client.line()
        for tracker in self.served.service.trackers:
            tracker.abort_all()  # dropped, without a word
        with self.assertRaisesRegex(EOFError, "the server closed; unread: b''"):
            await waiting
        await client.closed()


class ReversingServer(socketserver.StreamRequestHandler):
    """Reverses each line, in a thread: a server that is not on the test's reactor."""

    def handle(self) -> None:
        for line in self.rfile:
            if line == b"close\n":
                return
            self.wfile.write(line.rstrip(b"\n")[::-1] + b"\n")


class BlockingLineClientTests(SynchronousTestCase):
    """BlockingLineClient, against a server in a thread (for tests, another process)."""

    def setUp(self) -> None:
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), ReversingServer)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        self.port = server.server_address[1]

    def test_lines_the_end_and_a_timeout(self) -> None:
        with BlockingLineClient(self.port, timeout=5) as client:
            client.send_line(b"hello")
            client.send(b"ab\ncd\n")
            self.assertEqual(
                [client.line(), client.line(), client.line()], [b"olleh", b"ba", b"dc"]
            )
            with self.assertRaisesRegex(TimeoutError, "nothing within the timeout"):
                client.line(timeout=0.05)
            client.send_line(b"xy")
            client.end_input()
            self.assertEqual(client.rest(), b"yx\n")
            with self.assertRaisesRegex(EOFError, "the server closed"):
                client.line()

    def test_the_server_closing_ends_a_read(self) -> None:
        client = BlockingLineClient(self.port)
        self.addCleanup(client.close)
        client.send_line(b"close")
        with self.assertRaises(EOFError):
            client.line()
        self.assertIsInstance(client.sock, socket.socket)
