"""A short GET on plain TCP: the status line with send, the body with sendfile, in the request's
own turn; what a full socket did not take goes on with a producer (a real socket pair under
Twisted's TCP connection class, write turns run by hand)."""

from __future__ import annotations

import os
import socket

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files.limits import SMALL_BODY
from tcpfiles.files.states import RESPONDING
from tests.files.helpers import served_factory
from tests.helpers import small_socketpair, temporary_directory

BODY = bytes(range(256)) * (SMALL_BODY // 256)  # the largest short body


class SmallSendfileTests(SynchronousTestCase):
    """The files server over a socket pair whose buffers hold a few KiB."""

    def setUp(self) -> None:
        self.root = temporary_directory(self) / "files"
        self.root.mkdir()
        (self.root / "small.bin").write_bytes(BODY)
        (self.root / "tiny.txt").write_bytes(b"tiny\n")

    def connect(self, **limits: object) -> tuple[object, tcp.Connection, socket.socket]:
        ours, theirs = small_socketpair(self)
        factory = served_factory(self.root, **limits)
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        protocol = factory.buildProtocol(peer)
        connection = tcp.Connection(ours, protocol, reactor=MemoryReactorClock())
        connection.getPeer = lambda: peer  # type: ignore[method-assign]
        connection.getHost = lambda: IPv4Address("TCP", "127.0.0.1", 8888)  # type: ignore[method-assign]
        connection.connected = 1
        protocol.makeConnection(connection)
        return protocol.wrappedProtocol, connection, theirs

    def read(self, connection: tcp.Connection, theirs: socket.socket, n: int) -> bytes:
        """Read ``n`` bytes, running the server's write turns as Twisted's reactor would."""
        data = b""
        for _ in range(100_000):
            if len(data) >= n:
                break
            theirs.setblocking(False)
            try:
                data += theirs.recv(1 << 16)
            except BlockingIOError:
                assert connection in connection.reactor.getWriters(), "nothing more to send"
                connection.doWrite()
        return data

    def test_a_short_body_the_socket_takes_is_answered_in_the_request_turn(self) -> None:
        server, connection, theirs = self.connect()
        with capturedLogs() as events:
            server.dataReceived(b"GET tiny.txt\n")
        assert server.state.takes_requests and connection.producer is None
        assert theirs.recv(100) == b"OK 5\ntiny\n"
        assert [e["outcome"] for e in events if "outcome" in e] == ["OK"]

    def test_what_a_full_socket_did_not_take_is_sent_after_it(self) -> None:
        """256 KiB into a 4 KiB socket: sendfile takes a part, a producer the rest, and the
        next request waits for it; the log counts the whole body."""
        server, connection, theirs = self.connect()
        with capturedLogs() as events:
            server.dataReceived(b"GET small.bin\nGET tiny.txt\n")
            assert server.state.name == RESPONDING
            sent, count = server.state.transferred()
            assert 0 < sent < count == len(BODY)
            head = f"OK {len(BODY)}\n".encode()
            got = self.read(connection, theirs, len(head) + len(BODY) + 10)
        assert got == head + BODY + b"OK 5\ntiny\n"
        outcomes = [(e["outcome"], e["nbytes"]) for e in events if "outcome" in e]
        assert outcomes == [("OK", len(BODY)), ("OK", 5)]

    def test_a_file_that_shrinks_before_the_rest_is_sent_ends_the_connection(self) -> None:
        """The size is promised in the status line: a short body must not pose as whole."""
        server, connection, theirs = self.connect()
        server.dataReceived(b"GET small.bin\n")
        assert server.state.name == RESPONDING
        os.truncate(self.root / "small.bin", 10)
        with capturedLogs() as events:
            for _ in range(100_000):
                if connection.disconnected:
                    break
                try:
                    theirs.setblocking(False)
                    theirs.recv(1 << 16)
                except BlockingIOError:
                    connection.doWrite()
                    connection.reactor.advance(0)  # abortConnection's connectionLost
        assert connection.disconnected
        assert any("aborted: file shrank" in e.get("outcome", "") for e in events)

    def test_without_sendfile_the_body_is_copied(self) -> None:
        """--no-sendfile: read whole and written with its status line, all the same bytes."""
        server, connection, theirs = self.connect(zero_copy=False)
        server.dataReceived(b"GET small.bin\n")
        head = f"OK {len(BODY)}\n".encode()
        assert self.read(connection, theirs, len(head) + len(BODY)) == head + BODY

    def test_where_there_is_no_msg_more_a_short_body_still_goes_out(self) -> None:
        """A POSIX system without ``MSG_MORE`` (macOS, the BSDs: ``os.sendfile`` is there): the
        head goes in a send of its own, the body with sendfile; nothing raises, the file's
        descriptor is given back."""
        from tcpfiles.core import sending

        if hasattr(sending, "_MORE"):  # what the module found there at import
            self.patch(sending, "_MORE", 0)
        more = socket.MSG_MORE
        del socket.MSG_MORE
        self.addCleanup(setattr, socket, "MSG_MORE", more)
        server, connection, theirs = self.connect()
        server.account.store.root.fd()  # opened once, on first use
        descriptors = len(os.listdir("/proc/self/fd"))
        server.dataReceived(b"GET tiny.txt\n")
        assert theirs.recv(100) == b"OK 5\ntiny\n"
        assert server.state.takes_requests
        assert len(os.listdir("/proc/self/fd")) == descriptors

    def test_a_failure_while_sending_gives_the_file_back(self) -> None:
        """Whatever send_file_now raises, the descriptor is closed (or a kept one given back)."""
        from tcpfiles.files import download

        server, connection, theirs = self.connect()
        kept = server.account.store.open_files
        kept.max_files = 64  # as the server's own root keeps them

        def broken(*args: object) -> int:
            raise RuntimeError("broken")

        self.patch(download, "send_file_now", broken)
        self.assertRaises(RuntimeError, server.dataReceived, b"GET tiny.txt\n")
        assert [entry.users for entry in kept._entries.values()] == [0]
