"""send_now, send_file_now and drained on a real socket pair under Twisted's TCP connection
class."""

from __future__ import annotations

import os
import socket

from twisted.internet import error, interfaces, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from tcpfiles.core.sending import (
    MAX_READ,
    MIN_READ,
    TransferStopped,
    adapt_read_size,
    buffered,
    can_send_now,
    close_now,
    drained,
    send_file_now,
    send_now,
    write_paced,
)
from tcpfiles.testing import PausingTransport
from tests.helpers import small_socketpair, temporary_directory


def read_all(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        data += sock.recv(n - len(data))
    return data


class SendingTests(SynchronousTestCase):
    """send_now, drained and write_paced on real and fake transports."""

    def pair(self) -> tuple[tcp.Connection, socket.socket]:
        """A connected Twisted TCP connection object over one end of a socket pair, and the
        other end (blocking) to read what was sent.  Nothing runs a reactor: doWrite is called
        by hand.  Both ends are closed when the test is done."""
        ours, theirs = small_socketpair(self)
        connection = tcp.Connection(ours, Protocol(), reactor=MemoryReactor())
        connection.connected = 1
        return connection, theirs

    def test_idle_connection_sends_everything_at_once(self) -> None:
        connection, theirs = self.pair()
        assert can_send_now(connection)
        assert send_now(connection, b"OK 3\n", b"abc") is True
        assert buffered(connection) == 0 and connection._tempDataBuffer == []
        assert read_all(theirs, 8) == b"OK 3\nabc"
        assert drained(connection).called

    def test_what_the_socket_does_not_take_is_queued_in_order(self) -> None:
        """A peer that is not reading: the rest waits in Twisted's buffer, in order, and drained()
        fires only once Twisted has handed it all to the kernel."""
        connection, theirs = self.pair()
        body = bytes(range(256)) * 4096  # 1 MiB, far more than the socket buffers hold
        assert send_now(connection, b"OK 1048576\n", body) is False
        queued = buffered(connection)
        assert 0 < queued <= len(body)
        assert not can_send_now(connection)
        assert send_now(connection, b"next\n") is False  # queued behind, never ahead
        done = drained(connection)
        assert not done.called and connection.producer is not None
        received = b""
        while not done.called:
            received += theirs.recv(1 << 16)
            connection.doWrite()
        assert connection.producer is None
        theirs.setblocking(False)
        try:
            while True:
                chunk = theirs.recv(1 << 16)
                if not chunk:
                    break
                received += chunk
        except BlockingIOError:
            pass
        assert received == b"OK 1048576\n" + body + b"next\n"

    def test_connection_lost_while_waiting_fails_the_wait(self) -> None:
        connection, _ = self.pair()
        send_now(connection, b"x" * (1 << 20))
        done = drained(connection)
        failures: list = []
        done.addErrback(failures.append)
        connection.producer.stopProducing()
        assert failures and failures[0].check(TransferStopped)

    def test_other_transports_get_plain_writes(self) -> None:
        """A test transport or a TLS one: no raw socket send, nothing reordered."""
        plain = StringTransport()
        assert not can_send_now(plain)
        assert send_now(plain, b"a", b"b") is False
        assert plain.value() == b"ab"
        assert drained(plain).called  # cannot tell: counts as drained

    def test_tls_and_closing_connections_are_never_written_raw(self) -> None:
        connection, _ = self.pair()
        directlyProvides(connection, interfaces.INegotiated)
        assert not can_send_now(connection)
        directlyProvides(connection)
        connection.disconnecting = True
        assert not can_send_now(connection)

    def test_paced_answer_below_the_limit_is_ready_at_once(self) -> None:
        transport = PausingTransport(limit=100)
        ready = write_paced(transport, b"OK ", b"fine\n")
        assert ready.called and transport.value() == b"OK fine\n"
        assert transport.producer is None

    def test_paced_answer_over_the_limit_waits_for_the_drain(self) -> None:
        """Any transport but an idle plain TCP one (TLS): the transport's own pause says when
        the next answer must wait."""
        transport = PausingTransport(limit=100)
        ready = write_paced(transport, b"x" * 101)
        assert not ready.called and transport.producer is not None
        transport.drain()
        assert ready.called and transport.producer is None

    def test_paced_answer_lost_with_the_connection(self) -> None:
        transport = PausingTransport(limit=100)
        ready = write_paced(transport, b"x" * 101)
        failures: list = []
        ready.addErrback(failures.append)
        transport.producer.stopProducing()
        assert failures and failures[0].check(TransferStopped)

    def test_paced_answer_on_plain_tcp_sends_now_or_waits_for_the_kernel(self) -> None:
        connection, theirs = self.pair()
        assert write_paced(connection, b"small\n").called
        assert read_all(theirs, 6) == b"small\n"
        ready = write_paced(connection, b"y" * (1 << 20))
        assert not ready.called
        got = 0
        while not ready.called:
            got += len(theirs.recv(1 << 16))
            connection.doWrite()
        assert connection.producer is None and buffered(connection) == 0

    def test_read_size_grows_while_reads_fill_it_and_shrinks_back(self) -> None:
        connection, _ = self.pair()
        assert connection.bufferSize == MIN_READ
        for _ in range(10):
            adapt_read_size(connection, connection.bufferSize)  # every read filled the buffer
        assert connection.bufferSize == MAX_READ
        adapt_read_size(connection, MAX_READ // 2)  # half full: stays
        assert connection.bufferSize == MAX_READ
        for _ in range(10):
            adapt_read_size(connection, 1024)  # small messages
        assert connection.bufferSize == MIN_READ

    def test_read_size_of_other_transports_is_left_alone(self) -> None:
        transport = StringTransport()
        adapt_read_size(transport, 1 << 20)
        assert not hasattr(transport, "bufferSize")

    def test_fast_paths_look_beneath_the_guard_and_the_proxy_layer(self) -> None:
        """Behind a haproxy: listener the socket is one layer further down: still found."""
        from twisted.internet import task

        from tcpfiles.core.proxy import ProxyFactory, ProxySettings
        from tcpfiles.testing import guarded

        connection, theirs = self.pair()
        connection.getPeer = lambda: IPv4Address("TCP", "127.0.0.1", 40000)  # type: ignore[method-assign]
        clock = task.Clock()
        factory = ProxyFactory(
            guarded(Factory.forProtocol(Protocol), clock), clock, ProxySettings()
        )
        proxy = factory.buildProtocol(connection.getPeer())
        proxy.makeConnection(connection)
        proxy.dataReceived(b"PROXY TCP4 203.0.113.5 192.0.2.1 5555 8888\r\n")
        guard = proxy.wrappedProtocol
        assert guard.getPeer().host == "203.0.113.5"
        assert can_send_now(guard)
        assert send_now(guard, b"OK 3\n", b"abc") is True
        assert read_all(theirs, 8) == b"OK 3\nabc"
        clock.advance(5)
        fd = SendFileNowTests.file(self, b"body")  # type: ignore[arg-type]
        assert send_file_now(guard, b"OK 4\n", fd, 0, 4) == 4
        assert read_all(theirs, 9) == b"OK 4\nbody"
        assert guard._last == 5  # the guard was told: traffic
        adapt_read_size(guard, connection.bufferSize)
        assert connection.bufferSize == 2 * MIN_READ
        from tcpfiles.tree.zerocopy import sendfile_possible

        assert sendfile_possible(guard)  # getHandle, producer, disconnecting: passed through


class SendFileNowTests(SynchronousTestCase):
    """send_file_now: the head with send(MSG_MORE), the body with sendfile, in this turn."""

    def file(self, data: bytes) -> int:
        path = temporary_directory(self) / "body.bin"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        return fd

    def tcp_pair(self) -> tuple[tcp.Connection, socket.socket]:
        """As SendingTests.pair, over TCP on loopback (MSG_MORE means something there)."""
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        theirs = socket.create_connection(listener.getsockname())
        self.addCleanup(theirs.close)
        ours, _ = listener.accept()
        self.addCleanup(ours.close)
        ours.setblocking(False)
        connection = tcp.Connection(ours, Protocol(), reactor=MemoryReactor())
        connection.connected = 1
        return connection, theirs

    def test_idle_connection_takes_head_and_body_at_once(self) -> None:
        connection, theirs = self.tcp_pair()
        body = os.urandom(10_000)
        fd = self.file(b"skip" + body)
        assert send_file_now(connection, b"OK 10000\n", fd, 4, len(body)) == len(body)
        assert buffered(connection) == 0
        assert read_all(theirs, 9 + len(body)) == b"OK 10000\n" + body
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # sendfile with an offset: the file's own stays

    def test_a_full_socket_takes_part_of_the_body_and_nothing_is_queued(self) -> None:
        """The caller sends the rest: what the kernel took is returned, Twisted holds nothing."""
        connection, theirs = SendingTests.pair(self)  # type: ignore[arg-type]
        body = bytes(range(256)) * 4096  # 1 MiB
        fd = self.file(body)
        taken = send_file_now(connection, b"OK 1048576\n", fd, 0, len(body))
        assert taken is not None and 0 < taken < len(body)
        assert buffered(connection) == 0
        assert read_all(theirs, 11 + taken) == b"OK 1048576\n" + body[:taken]

    def test_a_head_the_socket_does_not_take_is_queued_first(self) -> None:
        connection, theirs = SendingTests.pair(self)  # type: ignore[arg-type]
        try:
            for _ in range(10_000):  # bounded: fill the socket until it would block
                connection.socket.send(b"x" * 4096)
        except BlockingIOError:
            pass
        fd = self.file(b"body")
        assert send_file_now(connection, b"OK 4\n", fd, 0, 4) == 0
        assert buffered(connection) == len(b"OK 4\n")

    def test_not_where_it_cannot_be_done(self) -> None:
        """A test transport, bytes already queued, a producer registered: None, nothing sent."""
        fd = self.file(b"body")
        assert send_file_now(StringTransport(), b"OK 4\n", fd, 0, 4) is None
        connection, theirs = SendingTests.pair(self)  # type: ignore[arg-type]
        connection.write(b"queued")
        assert send_file_now(connection, b"OK 4\n", fd, 0, 4) is None
        connection, theirs = SendingTests.pair(self)  # type: ignore[arg-type]
        connection.registerProducer(LostProtocol(), True)
        assert send_file_now(connection, b"OK 4\n", fd, 0, 4) is None
        theirs.setblocking(False)
        self.assertRaises(BlockingIOError, theirs.recv, 10)


class LostProtocol(Protocol):
    """Records connectionLost."""

    def __init__(self) -> None:
        self.reasons: list = []

    def connectionLost(self, reason=None) -> None:  # type: ignore[no-untyped-def]
        self.reasons.append(reason)


class CloseNowTests(SynchronousTestCase):
    """close_now: what loseConnection's write turn would do, without the turn."""

    def pair(self) -> tuple[tcp.Connection, socket.socket, LostProtocol]:
        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        ours.setblocking(False)
        protocol = LostProtocol()
        reactor = MemoryReactor()
        connection = tcp.Connection(ours, protocol, reactor=reactor)
        connection.connected = 1
        connection.startReading()
        return connection, theirs, protocol

    def test_sent_then_closed_cleanly_at_once(self) -> None:
        """The bytes the kernel took arrive, then the end of the stream; connectionLost has
        run with a clean close, reading and writing stopped."""
        connection, theirs, protocol = self.pair()
        assert send_now(connection, b"OK 2\n", b"hi")
        assert close_now(connection) is True
        assert len(protocol.reasons) == 1 and protocol.reasons[0].check(error.ConnectionDone)
        assert connection.disconnected
        assert connection not in connection.reactor.getReaders()
        assert connection not in connection.reactor.getWriters()
        assert read_all(theirs, 7) == b"OK 2\nhi"
        assert theirs.recv(10) == b""

    def test_not_when_anything_is_queued_or_not_plain(self) -> None:
        """Bytes still in Twisted's buffer, a producer, a closing or test transport: no."""
        connection, _, protocol = self.pair()
        connection.write(b"queued")
        assert close_now(connection) is False
        connection, _, protocol = self.pair()
        connection.registerProducer(LostProtocol(), True)
        assert close_now(connection) is False
        connection.unregisterProducer()
        connection.loseWriteConnection()
        assert close_now(connection) is False
        assert close_now(StringTransport()) is False
        assert protocol.reasons == []

    def test_beneath_the_guard_and_the_proxy_layer_the_socket_itself_is_closed(self) -> None:
        """Behind a haproxy: listener: the TCP connection is closed (the client sees the end
        of the stream), not only the layers above it told."""
        from twisted.internet import task

        from tcpfiles.core.proxy import ProxyFactory, ProxySettings
        from tcpfiles.testing import guarded

        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        ours.setblocking(False)
        clock = task.Clock()
        factory = ProxyFactory(
            guarded(Factory.forProtocol(LostProtocol), clock), clock, ProxySettings()
        )
        proxy = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        connection = tcp.Connection(ours, proxy, reactor=MemoryReactor())
        connection.connected = 1
        connection.getPeer = lambda: IPv4Address("TCP", "127.0.0.1", 40000)  # type: ignore[method-assign]
        connection.startReading()
        proxy.makeConnection(connection)
        proxy.dataReceived(b"PROXY TCP4 203.0.113.5 192.0.2.1 5555 8888\r\n")
        guard = proxy.wrappedProtocol
        protocol = guard.wrappedProtocol
        assert send_now(guard, b"OK 2\n", b"hi")
        assert close_now(guard) is True
        assert connection.disconnected
        assert len(protocol.reasons) == 1 and protocol.reasons[0].check(error.ConnectionDone)
        assert read_all(theirs, 7) == b"OK 2\nhi"
        assert theirs.recv(10) == b""
