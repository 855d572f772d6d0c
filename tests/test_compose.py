"""The composition API: make_service builds what twistd runs, for any Twisted program."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpfiles import tap
from tcpfiles.compose import Serve, make_service, serve_stream
from tcpfiles.core.fdlimit import FdLimitCheck
from tcpfiles.core.plugin import Behaviour, ConnectionOptions, Context
from tcpfiles.core.service import DrainingService, ListenerService
from tcpfiles.core.udp import UDPListenerService
from tcpfiles.echo.plugin import echo
from tcpfiles.tree.sweep import StaleTemporaries
from tests.helpers import temporary_directory

BIG = 64 << 20  # more than loopback socket buffers hold: a paused reader holds up the GET


class ShoutProtocol(LineOnlyReceiver):
    """Answers each line upper-cased, with a '!'; closes when asked to drain."""

    delimiter = b"\n"
    factory: ShoutFactory

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line.upper() + self.factory.mark)

    def drain(self) -> None:
        self.transport.loseConnection()


class ShoutFactory(protocol.Factory):
    protocol = ShoutProtocol

    def __init__(self, clock: Any, options: usage.Options) -> None:
        self.mark = options["mark"].encode()


class ShoutOptions(ConnectionOptions):
    optParameters = [["mark", None, "!", "What ends each answer."]]


#: A third-party behaviour, defined here and never installed: served by object, not by name.
shout = Behaviour(
    "shout",
    "answers each line upper-cased",
    "tcp:7790",
    ShoutOptions,
    lambda options, context: ShoutFactory(context.reactor, options),
)


def temporary_root(case: SynchronousTestCase) -> str:
    root = temporary_directory(case)
    (root / "hi.txt").write_bytes(b"hi")
    return str(root)


def children(top: Any, kind: type) -> list[Any]:
    return [child for child in top if isinstance(child, kind)]


class MakeServiceTests(SynchronousTestCase):
    """What make_service builds, on a memory reactor: nothing opens before start."""

    def setUp(self) -> None:
        self.root = temporary_root(self)
        self.reactor = MemoryReactorClock()

    def test_by_name_and_by_object_with_options_as_a_mapping(self) -> None:
        """files by name, echo and a third party by object; option values parsed as on twistd."""
        top = make_service(
            self.reactor,
            self.root,
            [
                Serve("files", ["tcp:1234:interface=127.0.0.1"], {"max-line": "100"}),
                Serve(echo, ["tcp:1235"]),
                Serve(shout, ["tcp:1236", "unix:/tmp/shout.sock"], {"mark": "?"}),
            ],
            grace=5,
        )
        self.assertIsInstance(top, DrainingService)
        self.assertEqual((top.grace, self.reactor.tcpServers), (5, []))
        self.assertIsInstance(list(top)[0], FdLimitCheck)
        listeners = children(top, ListenerService)
        self.assertEqual(
            [(listener.label, listener.requested) for listener in listeners],
            [
                ("files", "tcp:1234:interface=127.0.0.1"),
                ("echo", "tcp:1235"),
                ("shout", "tcp:1236"),
                ("shout", "unix:/tmp/shout.sock"),
            ],
        )
        self.assertEqual(listeners[0].factory.wrappedFactory.limits.max_line, 100)
        self.assertEqual(listeners[2].factory.wrappedFactory.mark, b"?")
        self.assertIs(listeners[2].factory, listeners[3].factory)  # one per behaviour
        self.assertEqual(len(top.trackers), 3)

    def test_defaults_tls_and_datagrams(self) -> None:
        """Bare names take their default endpoints; tls makes the stream ones ssl:, not UDP."""
        from tests.e2e.certs import make_ca, make_server_cert

        pair = make_server_cert(Path(self.root), make_ca(Path(self.root)))
        top = make_service(
            self.reactor, self.root, ["chat", "udp-echo"], tls=(str(pair.cert), str(pair.key))
        )
        [chat] = children(top, ListenerService)
        self.assertTrue(chat.requested.startswith("ssl:9000:certKey="))
        [udp] = children(top, UDPListenerService)
        self.assertEqual((udp.description, udp.label), ("udp:7777", "udp-echo"))

    def test_a_third_party_datagram_behaviour_gets_a_protocol_per_endpoint(self) -> None:
        """Declared datagram: each endpoint its own DatagramProtocol, by sibling() or build."""
        built: list[Any] = []

        def build(options: usage.Options, context: Context) -> protocol.DatagramProtocol:
            built.append(protocol.DatagramProtocol())
            return built[-1]

        ping = Behaviour("ping", "", "udp:7791", usage.Options, build, datagram=True)
        top = make_service(self.reactor, self.root, [Serve(ping, ["udp:1", "udp:2"])])
        self.assertEqual([udp.protocol for udp in children(top, UDPListenerService)], built)
        self.assertEqual(len(built), 2)

    def test_accounts_for_every_behaviour(self) -> None:
        """One portal and limiter for files and chat; --writable removes stale temporaries."""
        from twisted.cred import strcred

        top = make_service(
            self.reactor,
            self.root,
            [Serve("files", ["tcp:1"]), Serve("chat", ["tcp:2"])],
            writable=True,
            checkers=[strcred.makeChecker("memory:alice:pw")],
        )
        files, chat = (
            listener.factory.wrappedFactory  # behind the kernel's guard
            for listener in children(top, ListenerService)
        )
        self.assertIsNotNone(files.portal)
        self.assertIs(chat.portal, files.portal)
        self.assertIs(chat.limiter, files.limiter)
        self.assertIsNotNone(files.uploads)
        self.assertEqual(len(children(top, StaleTemporaries)), 1)

    def test_mistakes_are_value_errors_before_anything_is_built(self) -> None:
        """Unknown names, endpoints of the wrong kind and refused options say what is wrong."""
        for serving, message in [
            (["nope"], r"no such behaviour 'nope' \(known: .*chat"),
            ([Serve("chat", ["udp:9000"])], "chat is a stream behaviour"),
            ([Serve("udp-echo", ["tcp:7777"])], "udp-echo is a datagram behaviour"),
            ([Serve("chat", options={"history": -1})], "chat: --history must be 0 or more"),
            ([Serve(shout, options={"colour": "red"})], "shout: .*colour"),
        ]:
            with self.assertRaisesRegex(ValueError, message):
                make_service(self.reactor, self.root, serving)
        self.assertEqual(self.reactor.triggers, {})  # no hashing pool was set up

    def test_the_tap_builds_the_same_through_it(self) -> None:
        """tap.makeService is make_service with the options translated: same listeners."""
        options = tap.Options()
        serve_echo = ["--serve", "echo=tcp:2", "--echo-max-per-peer", "3"]
        options.parseOptions(["--root", self.root, "-l", "tcp:1", *serve_echo])
        from_tap = tap.makeService(options, reactor=self.reactor)
        direct = make_service(
            self.reactor,
            self.root,
            [Serve("files", ["tcp:1"]), Serve("echo", ["tcp:2"], {"max-per-peer": 3})],
        )
        for top in (from_tap, direct):
            self.assertEqual(
                [(c.label, c.requested) for c in children(top, ListenerService)],
                [("files", "tcp:1"), ("echo", "tcp:2")],
            )
            self.assertEqual([t.max_per_peer for t in top.trackers], [64, 3])

    def test_one_place_hands_a_stream_factory_to_its_listeners(self) -> None:
        """serve_stream: a listener per endpoint, both with the factory behind one kernel guard
        (its options' limits), whose tracker is drained on stop."""
        top = DrainingService([], 1, self.reactor)
        options = parsed(ShoutOptions, "--max-per-peer", "3")
        factory = ShoutFactory(self.reactor, options)
        serve_stream(top, factory, options, ["tcp:1", "tcp:2"], "s")
        first, second = [c.factory for c in top]
        self.assertIs(first, second)
        self.assertIs(first.wrappedFactory, factory)
        self.assertEqual(top.trackers, [first.tracker])
        self.assertEqual(first.tracker.max_per_peer, 3)


def parsed(options_class: type[usage.Options], *argv: str) -> usage.Options:
    options = options_class()
    options.parseOptions(list(argv))
    return options


class Collect(protocol.Protocol):
    """Sends ``request`` once connected; ``first`` fires at the first bytes back, ``done`` with
    everything when the connection is closed."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.data = bytearray()
        self.first: defer.Deferred[bytes] = defer.Deferred()
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if not self.first.called:
            self.first.callback(bytes(data))

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(bytes(self.data))


class RealReactorTests(TestCase):
    """files + echo + a third party on 127.0.0.1:0 with the real reactor: served, then drained."""

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.patch(FdLimitCheck, "privilegedStartService", lambda self: None)  # not ours to raise
        self.root = temporary_root(self)
        with open(os.path.join(self.root, "big.bin"), "wb") as f:
            f.truncate(BIG)
        local = "tcp:0:interface=127.0.0.1"
        self.top = make_service(
            reactor,
            self.root,
            [Serve("files", [local]), Serve(echo, [local]), Serve(shout, [local])],
            grace=20,
        )
        self.top.privilegedStartService()
        self.top.startService()
        self.addCleanup(self.stop_if_running)
        self.ports = {c.label: c.port.getHost().port for c in children(self.top, ListenerService)}

    def stop_if_running(self) -> defer.Deferred[None] | None:
        """After a failed test: drop what is still connected, stop listening if not stopped."""
        for tracker in self.top.trackers:
            tracker.abort_all()
        return defer.maybeDeferred(self.top.stopService) if self.top.running else None

    def wait(self, d: defer.Deferred[Any], seconds: float = 20) -> defer.Deferred[Any]:
        """``d``, failed with a timeout if it has not fired within ``seconds``."""
        return d.addTimeout(seconds, self.reactor)

    async def connect(self, label: str, request: bytes) -> Collect:
        client = Collect(request)
        creator = protocol.ClientCreator(self.reactor, lambda: client)
        await self.wait(creator.connectTCP("127.0.0.1", self.ports[label]))
        return client

    async def test_serves_each_then_drains_on_stop(self) -> None:
        """Each answers; on stop a GET in flight finishes whole, idle ones close, then done."""
        answered = await self.connect("files", b"GET hi.txt\nQUIT\n")
        self.assertEqual(await self.wait(answered.done), b"OK 2\nhiOK bye\n")
        echoed = await self.connect("echo", b"ping")
        self.assertEqual(await self.wait(echoed.first), b"ping")
        shouted = await self.connect("shout", b"hey\n")
        self.assertEqual(await self.wait(shouted.first), b"HEY!\n")
        download = await self.connect("files", b"GET big.bin\n")
        await self.wait(download.first)
        download.transport.pauseProducing()  # a reader that stops: the GET cannot finish yet
        stopped = self.top.stopService()
        self.assertEqual(await self.wait(echoed.done), b"ping")  # idle: closed at once
        self.assertEqual(await self.wait(shouted.done), b"HEY!\n")
        self.assertEqual([c.port for c in children(self.top, ListenerService)], [None] * 3)
        self.assertFalse(stopped.called)  # still draining: a GET is in flight
        download.transport.resumeProducing()
        body = await self.wait(download.done)
        self.assertEqual(body, f"OK {BIG}\n".encode() + bytes(BIG))  # finished, not cut
        self.assertIsNone(await self.wait(stopped))
        self.assertEqual(sum(len(t.active) for t in self.top.trackers), 0)
