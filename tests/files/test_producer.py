"""The copying body producer: pulled on plain TCP, pushed under TLS, with backpressure."""

from __future__ import annotations

import os

from twisted.internet import interfaces, task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from tcpfiles.tree.producer import (
    PUSH_BURST,
    TLS_CHUNK_SIZE,
    FileBodyProducer,
    FileShrank,
    TransferStopped,
)
from tests.helpers import cases, temporary_directory, with_cases

SIZE = 5 * TLS_CHUNK_SIZE + 123


class BufferingTransport(StringTransport):
    """Like Twisted's TCP transport: pauses a push producer once it holds more than ``limit``,
    and resumes it when :meth:`drain` empties the buffer (a pull producer is asked instead)."""

    def __init__(self, limit: int = 64 * 1024, tls: bool = False) -> None:
        super().__init__()
        self.limit = limit
        self.buffered = 0
        self.received = bytearray()
        if tls:
            directlyProvides(self, interfaces.INegotiated)

    def write(self, data: bytes) -> None:
        super().write(data)
        self.buffered += len(data)
        if self.producer is not None and self.streaming and self.buffered > self.limit:
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.received += self.io.getvalue()
        self.clear()
        self.buffered = 0
        if self.producer is not None:
            self.producer.resumeProducing()


def run_to_end(transport: BufferingTransport, done: list, limit: int = 1000) -> int:
    turns = 0
    while not done and turns < limit:
        transport.drain()
        turns += 1
    return turns


@with_cases
class ProducerTests(SynchronousTestCase):
    """The copying body producer: pulled on plain TCP, pushed under TLS, with backpressure."""

    def body(self) -> tuple[int, bytes]:
        """A descriptor open on SIZE random bytes (closed at cleanup), and those bytes."""
        data = os.urandom(SIZE)
        path = temporary_directory(self) / "body.bin"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        return fd, data

    @cases(
        at_0=(0,),
        at_1=(1,),
        at_size_minus_1=(SIZE - 1,),
        at_size=(SIZE,),
    )
    def test_pulled_on_plain_tcp(self, offset) -> None:
        """On a plain transport: registered as a pull producer, one chunk per ask, byte-exact."""
        fd, data = self.body()
        transport = BufferingTransport()
        producer = FileBodyProducer(fd, offset, SIZE - offset, chunk_size=TLS_CHUNK_SIZE)
        done: list[int] = []
        producer.begin(transport).addCallback(done.append)
        assert transport.streaming is False and not producer.streaming
        assert transport.value() == b""  # nothing until the transport asks
        run_to_end(transport, done)
        assert done == [SIZE - offset]
        assert bytes(transport.received) == data[offset:]
        assert transport.producer is None

    def test_pushed_under_tls_one_chunk_per_drain(self) -> None:
        """Under TLS: registered as a push producer, writes at once, paused after each chunk by
        the transport's limit, resumed by the drain; finishes once the transport can take more."""
        fd, data = self.body()
        transport = BufferingTransport(limit=TLS_CHUNK_SIZE - 1, tls=True)
        progress: list[int] = []
        producer = FileBodyProducer(
            fd, 0, SIZE, chunk_size=1 << 20, on_progress=progress.append, clock=task.Clock()
        )
        done: list[int] = []
        producer.begin(transport).addCallback(done.append)
        assert transport.streaming is True and producer.streaming
        assert transport.value() == data[:TLS_CHUNK_SIZE]  # pushed at once, one chunk, then paused
        # four more full chunks, then the last 123 bytes, which leave the transport ready for more
        assert run_to_end(transport, done) == 5
        assert done == [SIZE] and bytes(transport.received) + transport.value() == data
        assert progress == [TLS_CHUNK_SIZE] * 5 + [123]
        assert transport.producer is None

    def test_pushed_without_pauses_yields_to_the_reactor(self) -> None:
        """A consumer that never pauses gets a bounded burst per reactor turn, not the whole
        file."""
        fd, data = self.body()
        clock = task.Clock()
        transport = BufferingTransport(limit=1 << 30, tls=True)
        producer = FileBodyProducer(fd, 0, SIZE, clock=clock)
        done: list[int] = []
        producer.begin(transport).addCallback(done.append)
        assert len(transport.value()) == PUSH_BURST * TLS_CHUNK_SIZE
        assert not done and len(clock.getDelayedCalls()) == 1
        clock.advance(0)
        assert done == [SIZE] and transport.value() == data

    def test_pushed_resume_from_inside_a_write_does_not_recurse(self) -> None:
        """A transport that resumes its producer from inside write() gets no nested writes: the
        outer loop goes on (it was told to), still bounded by the burst."""
        fd, data = self.body()

        class Eager(BufferingTransport):
            def write(self, data: bytes) -> None:
                super().write(data)
                self.producer.pauseProducing()
                self.producer.resumeProducing()

        transport = Eager(tls=True)
        clock = task.Clock()
        producer = FileBodyProducer(fd, 0, SIZE, clock=clock)
        active: list[bool] = []
        nested: list[bool] = []
        original = producer._step

        def watched_step() -> None:
            nested.append(bool(active))
            active.append(True)
            try:
                original()
            finally:
                active.pop()

        producer._step = watched_step  # type: ignore[method-assign]
        done: list[int] = []
        producer.begin(transport).addCallback(done.append)
        assert len(transport.value()) == PUSH_BURST * TLS_CHUNK_SIZE
        clock.advance(0)
        assert done == [SIZE] and transport.value() == data
        assert nested and not any(nested)

    @cases(
        plain=(False,),
        tls=(True,),
    )
    def test_stop_producing_fails_the_transfer(self, tls) -> None:
        fd, _ = self.body()
        transport = BufferingTransport(tls=tls)
        producer = FileBodyProducer(fd, 0, SIZE, clock=task.Clock())
        failures: list = []
        producer.begin(transport).addErrback(failures.append)
        transport.drain()
        producer.stopProducing()
        assert failures and failures[0].check(TransferStopped)
        producer.resumeProducing()  # late calls do nothing
        producer.stopProducing()

    @cases(
        plain=(False,),
        tls=(True,),
    )
    def test_a_file_that_shrinks_ends_the_transfer(self, tls) -> None:
        path = temporary_directory(self) / "shrinks.bin"
        path.write_bytes(b"x" * SIZE)
        fd = os.open(path, os.O_RDONLY)
        try:
            transport = BufferingTransport(limit=1000, tls=tls)
            producer = FileBodyProducer(fd, 0, SIZE, chunk_size=TLS_CHUNK_SIZE, clock=task.Clock())
            failures: list = []
            producer.begin(transport).addErrback(failures.append)
            os.truncate(path, TLS_CHUNK_SIZE + 10)
            for _ in range(10):
                if failures:
                    break
                transport.drain()
            assert failures and failures[0].check(FileShrank)
            assert len(transport.received) + len(transport.value()) == TLS_CHUNK_SIZE + 10
            assert transport.producer is None
        finally:
            os.close(fd)

    def test_tls_needs_a_clock(self) -> None:
        """Under TLS a producer yields turns through its clock: without one it refuses to begin
        (library code never falls back to the global reactor)."""
        fd, _ = self.body()
        producer = FileBodyProducer(fd, 0, SIZE)
        with self.assertRaisesRegex(ValueError, "needs a clock"):
            producer.begin(BufferingTransport(tls=True))
