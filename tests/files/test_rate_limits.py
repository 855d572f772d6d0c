"""Rate limits on a fake clock: bodies paced by the producers, uploads by pausing the reading,
an account's bucket shared by its connections, and nothing of it when there is no limit."""

from __future__ import annotations

import hashlib
import os
import socket

from twisted.cred import strcred
from twisted.internet import interfaces, task
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import _ProducerMembrane
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from tcpfiles.core.auth import make_portal
from tcpfiles.core.guard import GuardedFactory
from tcpfiles.core.rates import Pace, TokenBucket
from tcpfiles.files.factory import connection_settings
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.testing import connect, files_factory
from tcpfiles.tree.accounts import FilesRealm, parse_users
from tcpfiles.tree.hashing import inline
from tcpfiles.tree.paths import Root
from tcpfiles.tree.producer import FileBodyProducer
from tcpfiles.tree.zerocopy import SendfileProducer
from tests.files.test_producer import BufferingTransport
from tests.helpers import cases, temporary_directory, with_cases

MIB = 1 << 20
TICK = 0.01


def sha(body: bytes) -> bytes:
    return hashlib.sha256(body).hexdigest().encode()


def put_line(body: bytes) -> bytes:
    return b"PUT %d %s up.bin\n" % (len(body), sha(body))


def per_second(clock: task.Clock, step, received, seconds: int) -> list[int]:
    """Call ``step()`` every TICK of simulated time; the bytes ``received()`` says arrived in
    each whole second."""
    marks = [received()]
    for _ in range(seconds):
        for _ in range(round(1 / TICK)):
            step()
            clock.advance(TICK)
        marks.append(received())
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


class SocketTransport:
    """What SendfileProducer needs of a TCP transport, over one end of a socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.producer = None
        self.writing = False

    def getHandle(self) -> socket.socket:
        return self.sock

    def registerProducer(self, producer, streaming) -> None:
        self.producer = producer
        self.writing = True  # Twisted starts writing for a pull producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def startWriting(self) -> None:
        self.writing = True

    def turn(self) -> None:
        """The reactor's write turn, when one was asked for and the buffer is empty."""
        if self.writing and self.producer is not None:
            self.writing = False
            self.producer.resumeProducing()


@with_cases
class PacedProducerTests(SynchronousTestCase):
    """Both body producers send at the rate, within the bucket's burst, each simulated second."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        path = temporary_directory(self) / "body.bin"
        path.write_bytes(os.urandom(8 * MIB))
        self.fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, self.fd)

    def assert_paced(self, seconds: list[int], bucket: TokenBucket) -> None:
        rate = bucket.rate
        assert rate <= seconds[0] <= rate + bucket.burst + 2 * bucket.step, seconds
        for got in seconds[1:]:
            assert abs(got - rate) <= 2 * bucket.step, seconds

    def assert_told(self, waits: list[bool], pace: Pace) -> None:
        """``on_wait`` was told each wait for the bucket as it began (True) and ended (False)."""
        assert len(waits) > 10 and waits[0] is True, waits
        assert all(a is not b for a, b in zip(waits, waits[1:], strict=False)), waits
        assert waits[-1] is pace.waiting

    @cases(pulled=(False,), pushed=(True,))
    def test_copying_producer(self, tls) -> None:
        """Pulled (plain TCP) or pushed (TLS), it writes no more than the bucket grants."""
        bucket = TokenBucket(self.clock, 2 * MIB)
        transport = BufferingTransport(limit=1 << 30, tls=tls)
        waits: list[bool] = []
        producer = FileBodyProducer(
            self.fd, 0, 8 * MIB, clock=self.clock, pace=Pace([bucket]), on_wait=waits.append
        )
        done: list[int] = []
        producer.begin(transport).addCallback(done.append)
        seconds = per_second(self.clock, transport.drain, lambda: len(transport.received), 3)
        self.assert_paced(seconds, bucket)
        self.assert_told(waits, producer._pace)
        assert not done
        for _ in range(500):  # the rest, then done; nothing left on the clock
            transport.drain()
            self.clock.advance(TICK)
        assert done == [8 * MIB] and self.clock.getDelayedCalls() == []

    def test_sendfile_producer(self) -> None:
        """sendfile hands the kernel at most the grant per turn, and asks for no write turn
        while the bucket is empty."""
        bucket = TokenBucket(self.clock, 2 * MIB)
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        ours.setblocking(False)
        theirs.setblocking(False)
        received = [0]

        def step() -> None:
            transport.turn()
            try:
                while True:
                    received[0] += len(theirs.recv(1 << 20))
            except BlockingIOError:
                pass

        transport = SocketTransport(ours)
        waits: list[bool] = []
        pace = Pace([bucket])
        producer = SendfileProducer(self.fd, 0, 8 * MIB, pace=pace, on_wait=waits.append)
        stopped: list[object] = []
        producer.begin(transport).addErrback(stopped.append)
        seconds = per_second(self.clock, step, lambda: received[0], 3)
        self.assert_paced(seconds, bucket)
        self.assert_told(waits, pace)
        producer.stopProducing()  # gone mid-way: it stops waiting for the bucket
        assert len(stopped) == 1 and self.clock.getDelayedCalls() == []


def served(root, clock, **limits) -> tuple[FileServerFactory, GuardedFactory]:
    factory = files_factory(root, clock, limits=Limits(**limits), writable=True)
    return factory, GuardedFactory(factory, clock, connection_settings(factory.limits))


class PacedServerTests(SynchronousTestCase):
    """--rate on the files server: GET paced, PUT's reading paused and resumed, idle kept."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.root = temporary_directory(self) / "files"
        self.root.mkdir()
        (self.root / "big.bin").write_bytes(os.urandom(4 * MIB))
        (self.root / "small.txt").write_bytes(b"small\n")

    def drain(self, transport: StringTransport) -> None:
        if transport.producer is not None and not transport.streaming:
            transport.producer.resumeProducing()

    def test_get_paced_and_kept_open_past_the_idle_timeout(self) -> None:
        """A 4 MiB GET at 1 MiB/s takes about 4 s; the kernel's idle timeout (1 s) never fires
        while the body waits for its allowance (a producer is registered)."""
        _, guarded = served(self.root, self.clock, rate=MIB, idle_timeout=1.0)
        protocol, transport = connect(guarded)
        protocol.dataReceived(b"GET big.bin\n")
        seconds = per_second(
            self.clock, lambda: self.drain(transport), lambda: len(transport.value()), 3
        )
        assert all(abs(got - MIB) < MIB // 8 for got in seconds[1:]), seconds
        assert not transport.disconnecting
        for _ in range(300):
            if transport.producer is None:
                break
            self.drain(transport)
            self.clock.advance(TICK)
        assert transport.value() == b"OK 4194304\n" + (self.root / "big.bin").read_bytes()
        assert not transport.disconnecting

    def test_small_bodies_are_paced_too(self) -> None:
        """Under a rate, even a small body goes through the paced producer."""
        factory, _ = served(self.root, self.clock, rate=MIB)
        protocol, transport = connect(factory)
        protocol.dataReceived(b"GET small.txt\n")
        assert transport.producer is not None
        self.drain(transport)
        self.drain(transport)
        assert transport.value() == b"OK 6\nsmall\n" and transport.producer is None

    def test_unlimited_costs_nothing(self) -> None:
        """Without a rate: no pace, no bucket, a small body answered at once, a big one
        produced with no timer of ours."""
        factory, _ = served(self.root, self.clock)
        protocol, transport = connect(factory)
        assert protocol.pace() is None and protocol.bucket is None
        protocol.dataReceived(b"GET small.txt\n")
        assert transport.value() == b"OK 6\nsmall\n" and transport.producer is None
        protocol.dataReceived(b"GET big.bin\n")
        assert transport.producer._pace is None
        for _ in range(10):
            self.drain(transport)
        assert transport.producer is None and len(transport.value()) > 4 * MIB
        assert [call.func for call in self.clock.getDelayedCalls()] == [protocol.idle._ran_out]

    def test_put_reading_paused_and_resumed(self) -> None:
        """At 1 MiB/s an upload's reading pauses once the bucket is spent, resumes when it has
        refilled, and the body arrives at the rate."""
        _, guarded = served(self.root, self.clock, rate=MIB)
        protocol, transport = connect(guarded)
        body = os.urandom(3 * MIB)
        digest = hashlib.sha256(body).hexdigest()
        protocol.dataReceived(b"PUT %d %s up.bin\n" % (len(body), digest.encode()))
        assert transport.value() == b"OK send %d\n" % len(body)
        sent = [0]

        def feed() -> None:  # a socket that delivers 64 KiB per turn while reading
            if transport.producerState == "producing" and sent[0] < len(body):
                protocol.dataReceived(body[sent[0] : sent[0] + 65536])
                sent[0] += 65536

        feed()
        feed()
        assert transport.producerState == "paused"  # 128 KiB spent: over the 0.1 s burst
        self.clock.advance(0.05)
        assert transport.producerState == "producing"
        seconds = per_second(self.clock, feed, lambda: sent[0], 2)
        assert all(abs(got - MIB) <= 2 * 65536 for got in seconds), seconds
        for _ in range(200):
            feed()
            self.clock.advance(TICK)
        assert transport.value().endswith(b"OK stored %d %s\n" % (len(body), digest.encode()))
        assert (self.root / "up.bin").read_bytes() == body
        assert transport.producerState == "producing"

    def test_put_waiting_for_its_allowance_is_not_idle(self) -> None:
        """At 16 KiB/s, 128 KiB read owe 4 s once the 64 KiB burst is spent: longer than the
        idle timeout (1 s) and the stall timeout (2 s), and neither fires; then reading resumes
        and the upload completes."""
        limits = {"rate": 16 << 10, "idle_timeout": 1.0, "stall_timeout": 2.0}
        _, guarded = served(self.root, self.clock, **limits)
        protocol, transport = connect(guarded)
        body = os.urandom(192 << 10)
        protocol.dataReceived(put_line(body))
        protocol.dataReceived(body[: 64 << 10])
        protocol.dataReceived(body[64 << 10 : 128 << 10])
        assert transport.producerState == "paused" and transport.producer is not None
        for _ in range(39):
            self.clock.advance(0.1)
        assert not transport.disconnecting and transport.producerState == "paused"
        self.clock.advance(0.11)
        assert transport.producerState == "producing" and transport.producer is None
        protocol.dataReceived(body[128 << 10 :])
        assert transport.value().endswith(b"OK stored %d %s\n" % (len(body), sha(body)))

    def test_put_cut_off_while_paused(self) -> None:
        """A connection lost while waiting for its allowance: the wait is withdrawn, the
        temporary removed."""
        factory, guarded = served(self.root, self.clock, rate=MIB)
        protocol, transport = connect(guarded)
        protocol.dataReceived(b"PUT %d %s up.bin\n" % (MIB, b"0" * 64))
        protocol.dataReceived(b"x" * 200_000)
        assert transport.producerState == "paused"
        protocol.connectionLost(None)
        assert [c for c in self.clock.getDelayedCalls() if c.active()] == []
        assert sorted(os.listdir(self.root)) == ["big.bin", "small.txt"]


class AccountRateTests(SynchronousTestCase):
    """``rate=`` in the users file: one bucket for all of an account's connections."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        tmp = temporary_directory(self)
        self.root = tmp / "files"
        (self.root / "alice").mkdir(parents=True)
        (self.root / "alice" / "big.bin").write_bytes(os.urandom(4 * MIB))
        users = tmp / "users"
        users.write_text("alice alice ro rate=1M\nbob alice ro\n")
        base = Root.at(str(self.root))
        realm = FilesRealm(
            base, False, parse_users(str(users), base), MIB, inline, None, self.clock
        )
        portal = make_portal(realm, [strcred.makeChecker("memory:alice:pw:bob:pw")], False)
        store, _ = realm.store_for(base)
        self.factory = FileServerFactory(store, self.clock, Limits(), None, portal)

    def login(self, user: bytes) -> tuple[object, StringTransport]:
        protocol, transport = connect(self.factory)
        protocol.dataReceived(b"LOGIN %s pw\n" % user)
        assert transport.value().startswith(b"OK welcome")
        transport.clear()
        return protocol, transport

    def test_two_connections_share_the_account_rate(self) -> None:
        """Two connections of alice downloading at once get about half of 1 MiB/s each; bob's
        (no rate) is not slowed by hers."""
        (first, one), (second, two) = self.login(b"alice"), self.login(b"alice")
        bob, bobs = self.login(b"bob")
        for protocol in (first, second):
            protocol.dataReceived(b"GET big.bin\n")
        bob.dataReceived(b"GET big.bin\n")
        assert bob.pace() is None

        def step() -> None:
            for transport in (one, two, bobs):
                if transport.producer is not None:
                    transport.producer.resumeProducing()

        per_second(self.clock, step, lambda: 0, 1)  # past the first burst
        before = len(one.value()), len(two.value())
        per_second(self.clock, step, lambda: 0, 2)
        got = [len(one.value()) - before[0], len(two.value()) - before[1]]
        assert all(abs(g - MIB) < MIB // 8 for g in got), got  # 2 s at half of 1 MiB/s each
        assert len(bobs.value()) > 4 * MIB  # done long ago


class MembraneTransport(StringTransport):
    """A TLS transport as Twisted's TLS layer is to a producer: it holds the producer registered
    wrapped in a ``_ProducerMembrane``, never the object itself."""

    def __init__(self) -> None:
        super().__init__()
        directlyProvides(self, interfaces.INegotiated)

    def registerProducer(self, producer, streaming) -> None:
        super().registerProducer(_ProducerMembrane(producer), streaming)


@with_cases
class TLSRateWaitTests(SynchronousTestCase):
    """Under TLS an upload that waited for its allowance unregisters its placeholder producer:
    the next GET can register its body's, and a QUIT closes."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.root = temporary_directory(self) / "files"
        self.root.mkdir()
        (self.root / "small.txt").write_bytes(b"small\n")

    def waited_upload(self, whole: bool) -> tuple[object, MembraneTransport]:
        """A 192 KiB upload at 16 KiB/s, which waits for its allowance, done."""
        factory, guarded = served(self.root, self.clock, rate=16 << 10)
        protocol = guarded.buildProtocol(("127.0.0.1", 4321))
        transport = MembraneTransport()
        protocol.makeConnection(transport)
        body = os.urandom(192 << 10)
        request = put_line(body) + body
        if whole:  # the line, then the body in 64 KiB reads: it waits after the second
            cut = len(put_line(body))
            pieces = [request[:cut]] + [
                body[i : i + (64 << 10)] for i in range(0, len(body), 64 << 10)
            ]
        else:
            pieces = [request[i : i + 1] for i in range(len(request))]
        fed = 0
        for _ in range(200):
            while fed < len(pieces) and transport.producerState == "producing":
                protocol.dataReceived(pieces[fed])
                fed += 1
            if fed == len(pieces):
                break
            assert transport.producer is not None  # waiting for its allowance
            self.clock.advance(0.1)
        for _ in range(100):
            if transport.value().endswith(b"OK stored %d %s\n" % (len(body), sha(body))):
                break
            self.clock.advance(0.1)
        assert transport.value().endswith(b"OK stored %d %s\n" % (len(body), sha(body)))
        transport.clear()
        return protocol, transport

    @cases(whole=(True,), one_byte_at_a_time=(False,))
    def test_get_after_a_waited_upload(self, whole) -> None:
        protocol, transport = self.waited_upload(whole)
        assert transport.producer is None
        protocol.dataReceived(b"GET small.txt\n")
        for _ in range(100):
            if transport.producer is None:
                break
            transport.producer.resumeProducing()
            self.clock.advance(0.1)
        assert transport.value() == b"OK 6\nsmall\n"

    @cases(whole=(True,), one_byte_at_a_time=(False,))
    def test_quit_after_a_waited_upload(self, whole) -> None:
        protocol, transport = self.waited_upload(whole)
        protocol.dataReceived(b"QUIT\n")
        assert transport.disconnecting and transport.producer is None


@with_cases
class SharedTurnTests(SynchronousTestCase):
    """Twenty downloads of one account share 8 KiB/s: each waits about 2.5 s for its turn (20
    grants of 1 KiB), longer than the stall timeout (2 s); waiting in turn is not stalling."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        tmp = temporary_directory(self)
        root = tmp / "files"
        (root / "a").mkdir(parents=True)
        (root / "a" / "big.bin").write_bytes(os.urandom(MIB))
        users = tmp / "users"
        users.write_text("alice a ro rate=8K\n")
        base = Root.at(str(root))
        realm = FilesRealm(
            base, False, parse_users(str(users), base), MIB, inline, None, self.clock
        )
        portal = make_portal(realm, [strcred.makeChecker("memory:alice:pw")], False)
        store, _ = realm.store_for(base)
        limits = Limits(stall_timeout=2.0)
        self.factory = FileServerFactory(store, self.clock, limits, None, portal)

    @cases(whole=(False,), byte_by_byte=(True,))
    def test_waiting_in_turn_is_not_stalling(self, byte_by_byte) -> None:
        conns = []
        for _ in range(21):
            protocol, transport = connect(self.factory)
            protocol.dataReceived(b"LOGIN alice pw\n")
            transport.clear()
            request = b"GET big.bin\n"
            for piece in (
                [request[i : i + 1] for i in range(len(request))] if byte_by_byte else [request]
            ):
                protocol.dataReceived(piece)
            conns.append((protocol, transport))
        reading, stuck = conns[:20], conns[20]
        for _ in range(300):  # 30 s, a write turn every 0.1 s for those that read
            for _protocol, transport in reading:
                if transport.producer is not None and not transport.disconnecting:
                    transport.producer.resumeProducing()
            self.clock.advance(0.1)
        assert [t for _p, t in reading if t.disconnecting] == []
        got = [len(t.value()) for _p, t in reading]
        assert all(got) and sum(got) <= 8192 * 30 + 64 * 1024 + 2 * 1024, got
        assert stuck[1].disconnecting  # one that does not read is still dropped
