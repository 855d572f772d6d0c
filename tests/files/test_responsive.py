"""A client that stops reading a big download: the reactor stays responsive (in-process, real
sockets on 127.0.0.1, the real reactor: a trial TestCase)."""

from __future__ import annotations

from twisted.internet import defer, protocol, task
from twisted.trial.unittest import TestCase

from tests.files.helpers import served_factory
from tests.helpers import cases, temporary_directory, with_cases

BIG = 256 << 20


class StopsReading(protocol.Protocol):
    """Asks for the big file, then stops reading once the status line is in."""

    def __init__(self) -> None:
        self.status: defer.Deferred[bytes] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"GET big.bin\n")

    def connectionLost(self, reason: object = None) -> None:
        self.lost.callback(None)

    def dataReceived(self, data: bytes) -> None:
        if not self.status.called:
            self.transport.pauseProducing()  # never read again
            self.status.callback(data.split(b"\n", 1)[0])


class GetSmall(protocol.Protocol):
    """GET small.txt, expecting the whole answer; fires with it."""

    def __init__(self) -> None:
        self.done: defer.Deferred[bytes] = defer.Deferred()
        self.data = b""

    def connectionMade(self) -> None:
        self.transport.write(b"GET small.txt\n")

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.data == b"OK 5\nquick":
            self.transport.loseConnection()
            self.done.callback(self.data)


@with_cases
class ResponsiveTests(TestCase):
    """A download nobody reads, served as twistd serves it, on the real reactor."""

    @cases(zero_copy=(True,), copying=(False,))
    async def test_a_reader_that_stops_keeps_the_reactor_responsive(self, zero_copy) -> None:
        """While a 256 MiB download sits unread, a LoopingCall every 10 ms never runs late by
        more than 100 ms, and 20 other requests are answered meanwhile."""
        from twisted.internet import reactor

        root = temporary_directory(self) / "files"
        root.mkdir()
        with open(root / "big.bin", "wb") as out:
            out.truncate(BIG)
        (root / "small.txt").write_bytes(b"quick")
        factory = served_factory(root, clock=reactor, zero_copy=zero_copy)  # as twistd serves it
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        endpoint_port = port.getHost().port
        stuck = StopsReading()
        try:
            await protocol.ClientCreator(reactor, lambda: stuck).connectTCP(
                "127.0.0.1", endpoint_port
            )
            assert await stuck.status == f"OK {BIG}".encode()

            ticks: list[float] = []
            loop = task.LoopingCall(lambda: ticks.append(reactor.seconds()))
            measured = loop.start(0.01, now=True)
            for _ in range(20):
                small = GetSmall()
                await protocol.ClientCreator(reactor, lambda small=small: small).connectTCP(
                    "127.0.0.1", endpoint_port
                )
                assert await small.done == b"OK 5\nquick"
            while len(ticks) < 100:  # at least a second of measuring
                await task.deferLater(reactor, 0.01, lambda: None)
            loop.stop()
            await measured
            worst = max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) - 0.01
            assert worst < 0.1, f"the reactor was late by {worst * 1e3:.0f} ms"
            # Measured while the server really was stuck on that client, mid-body:
            assert any(c.wrappedProtocol.state.name == "RESPONDING" for c in factory.tracker.active)
        finally:
            factory.tracker.abort_all()
            await factory.tracker.drain()
            await port.stopListening()
            if stuck.transport is not None:  # it reads no more, so it would never see the end
                stuck.transport.abortConnection()
                await stuck.lost
