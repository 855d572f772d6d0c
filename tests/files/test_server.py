"""The files server protocol on a fake transport, with a fake clock."""

from __future__ import annotations

import hashlib
import os

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.core.connections import RefusedProtocol
from tcpfiles.testing import PausingTransport, connect, pump, respond
from tests.files.helpers import make_factory, served_factory
from tests.helpers import cases, temporary_directory, with_cases

SESSION = b"GET a.txt\nGET nope\nRESUME 3 a.txt\nLIST\nGET sub\nQUIT\n"
REPLY = b"OK 6\nalpha\nERR not-found no such file or directory: nope\nOK 3\nha\n"


@with_cases
class ServerTests(SynchronousTestCase):
    """The files server protocol on a fake transport, with a fake clock."""

    def setUp(self) -> None:
        self.root = served = temporary_directory(self) / "files"
        (served / "sub").mkdir(parents=True)
        (served / "a.txt").write_bytes(b"alpha\n")
        (served / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
        os.symlink("/etc/passwd", served / "escape")

    @cases(
        whole=(False,),
        byte_by_byte=(True,),
    )
    def test_session_whole_or_byte_by_byte(self, byte_by_byte) -> None:
        """A pipelined session gives the same answers whether it arrives whole or a byte at a
        time."""
        protocol, transport = connect(make_factory(self.root))
        out = respond(protocol, transport, SESSION, byte_by_byte)
        assert out.startswith(REPLY)
        rest = out[len(REPLY) :].split(b"\n")
        assert rest[0] == b"OK list"
        rows = sorted(rest[1:3], key=lambda row: row.split(b" ", 3)[3])  # directory order: unsorted
        assert rows[0].startswith(b"f 6 ") and rows[0].endswith(b" a.txt")
        assert rows[1].startswith(b"d - ") and rows[1].endswith(b" sub")
        assert rest[3] == b"END 2"  # the escaping symlink is not listed
        assert b"ERR not-a-file is a directory: sub\nOK bye\n" in out
        assert transport.disconnecting

    def test_escaping_link_is_not_listed_and_not_served(self) -> None:
        """A symlink leaving the root neither appears in LIST nor serves anything."""
        protocol, transport = connect(make_factory(self.root))
        out = respond(protocol, transport, b"LIST\nGET escape\n")
        assert b"escape" not in out.split(b"ERR")[0]
        assert out.endswith(b"ERR not-found no such file or directory: escape\n")

    def test_large_body_arrives_whole_in_chunks(self) -> None:
        """A 1 MiB body goes out in several producer turns and arrives byte-exact."""
        factory = make_factory(self.root, chunk_size=64 * 1024)
        protocol, transport = connect(factory)
        protocol.dataReceived(b"GET sub/b.bin\n")
        assert transport.value() == b"OK 1048576\n"  # nothing read before the transport asks
        turns = 0
        while transport.producer is not None:
            transport.producer.resumeProducing()
            turns += 1
        assert turns == 17  # 16 chunks, then one call once the buffer has drained: done
        body = transport.value()[len(b"OK 1048576\n") :]
        assert body == (self.root / "sub" / "b.bin").read_bytes()

    def test_errors_keep_the_connection_open(self) -> None:
        """Every ERR except too-long leaves a healthy connection open."""
        protocol, transport = connect(make_factory(self.root))
        put = b"PUT 1 " + b"0" * 64 + b" a\n"
        out = respond(
            protocol, transport, b"FROB\nGET ../x\n" + put + b"RESUME 99 a.txt\nSTAT nope\n"
        )
        assert [line.split(b" ")[1] for line in out.splitlines()] == [
            b"bad-request",
            b"bad-request",
            b"read-only",
            b"bad-request",
            b"not-found",
        ]
        assert not transport.disconnecting

    def test_too_long_closes(self) -> None:
        """A request line over the limit is answered ERR too-long and the connection closes."""
        protocol, transport = connect(make_factory(self.root, max_line=100))
        out = respond(protocol, transport, b"GET " + b"x" * 200)
        assert out == b"ERR too-long request line over 100 bytes\n"
        assert transport.disconnecting

    def test_get_keeps_sending_the_file_it_opened(self) -> None:
        """A file replaced mid-download: the client still gets every byte of the old one."""
        protocol, transport = connect(make_factory(self.root, chunk_size=1024))
        protocol.dataReceived(b"GET sub/b.bin\n")
        transport.producer.resumeProducing()
        replacement = self.root / "new.bin"
        replacement.write_bytes(b"new")
        os.replace(replacement, self.root / "sub" / "b.bin")
        pump(transport)
        assert transport.value() == b"OK 1048576\n" + bytes(range(256)) * 4096

    def test_file_that_shrinks_mid_send_aborts(self) -> None:
        """A file truncated mid-send aborts the connection: no short body posing as whole."""
        protocol, transport = connect(make_factory(self.root, chunk_size=1024))
        protocol.dataReceived(b"GET sub/b.bin\n")
        transport.producer.resumeProducing()
        os.truncate(self.root / "sub" / "b.bin", 2048)
        with capturedLogs() as events:
            pump(transport)
        assert transport.disconnecting  # StringTransport.abortConnection marks it so
        assert any("aborted: file shrank" in e.get("outcome", "") for e in events)

    def test_stat_waits_for_hash_and_keeps_order(self) -> None:
        """STAT hashes off-thread; requests behind it wait and answers stay in order."""
        pending: list[tuple[defer.Deferred, object, tuple]] = []

        def later(f, *args):
            d = defer.Deferred()
            pending.append((d, f, args))
            return d

        protocol, transport = connect(make_factory(self.root, defer_to_thread=later))
        protocol.dataReceived(b"STAT a.txt\nGET a.txt\n")
        assert transport.value() == b""
        d, f, args = pending.pop()
        d.callback(f(*args))
        pump(transport)
        sha = hashlib.sha256(b"alpha\n").hexdigest().encode()
        out = transport.value()
        assert out.startswith(b"OK type=file size=6 mtime=")
        assert out.endswith(b" sha256=" + sha + b"\nOK 6\nalpha\n")

    def test_stat_directory(self) -> None:
        """STAT of a directory names its type and mtime, no size or hash."""
        protocol, transport = connect(make_factory(self.root))
        out = respond(protocol, transport, b"STAT /sub\n")
        assert out.startswith(b"OK type=dir mtime=") and b"sha256" not in out

    def test_line_deadline_is_not_reset_by_a_trickle(self) -> None:
        """A request line trickling in one byte a second still times out 30 s after it began."""
        clock = task.Clock()
        protocol, transport = connect(make_factory(self.root, clock=clock))
        for byte in b"GET a.tx":
            protocol.dataReceived(bytes([byte]))
            clock.advance(1)
        assert not transport.disconnecting
        clock.advance(30 - 8)
        assert transport.value() == b"ERR timeout request line not complete within 30 s\n"
        assert transport.disconnecting

    def test_idle_timeout(self) -> None:
        """A connection idle for the idle timeout gets a notice and is closed; activity resets
        it."""
        clock = task.Clock()
        protocol, transport = connect(make_factory(self.root, clock=clock, idle_timeout=300))
        clock.advance(299)
        respond(protocol, transport, b"GET a.txt\n")
        clock.advance(299)
        assert not transport.disconnecting
        clock.advance(1)
        assert transport.value().endswith(b"ERR timeout idle for 300 s; closing\n")
        assert transport.disconnecting
        assert not clock.getDelayedCalls()

    def test_stalled_transfer_is_aborted(self) -> None:
        """A body that makes no progress for the stall timeout is dropped; progress resets it."""
        clock = task.Clock()
        protocol, transport = connect(make_factory(self.root, clock=clock, chunk_size=1024))
        protocol.dataReceived(b"GET sub/b.bin\n")
        clock.advance(59)
        transport.producer.resumeProducing()  # progress
        clock.advance(59)
        assert not transport.disconnecting
        clock.advance(1)
        assert transport.disconnecting

    def test_pipelined_input_is_bounded_while_responding(self) -> None:
        """While a body is going out, reading stops once unparsed requests pass the limit."""
        factory = make_factory(self.root, chunk_size=1024, max_pending_input=4096)
        protocol, transport = connect(factory)
        protocol.dataReceived(b"GET sub/b.bin\n")
        protocol.dataReceived(b"GET a.txt\n" * 1000)
        assert transport.producerState == "paused"
        pump(transport)
        for _ in range(1000 // 64 + 1):  # the burst is answered 64 requests per reactor turn
            factory.clock.advance(0)
        assert transport.producerState == "producing"
        assert transport.value().count(b"OK 6\nalpha\n") == 1000

    def test_drain_closes_idle_at_once_and_busy_after_the_response(self) -> None:
        """On shutdown an idle connection closes now; a busy one after its current response."""
        factory = served_factory(self.root, chunk_size=1024)
        idle, idle_transport = connect(factory, port=1)
        busy, busy_transport = connect(factory, port=2)
        busy.dataReceived(b"GET sub/b.bin\nGET a.txt\n")
        drained = factory.tracker.drain()
        assert idle_transport.disconnecting
        assert not busy_transport.disconnecting
        idle.connectionLost(None)
        pump(busy_transport)
        assert busy_transport.disconnecting
        assert not busy_transport.value().endswith(b"alpha\n")  # the queued GET is not started
        assert len(busy_transport.value()) == len(b"OK 1048576\n") + (1 << 20)
        assert not drained.called
        busy.connectionLost(None)
        assert drained.called

    def test_per_peer_and_total_limits(self) -> None:
        """Past the limits a connection is refused with ERR busy; closing frees a place."""
        factory = served_factory(self.root, max_per_peer=2, max_connections=3)
        first, _ = connect(factory, host="192.0.2.1", port=1)
        connect(factory, host="192.0.2.1", port=2)
        refused = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 3))
        assert isinstance(refused, RefusedProtocol)
        connect(factory, host="192.0.2.2", port=1)
        refused_total = factory.buildProtocol(IPv4Address("TCP", "192.0.2.3", 1))
        assert isinstance(refused_total, RefusedProtocol)
        first.connectionLost(None)
        assert not isinstance(
            factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 4)), RefusedProtocol
        )

    def test_refusal_says_busy_and_closes(self) -> None:
        """The refusal protocol sends one ERR busy line and closes."""
        factory = served_factory(self.root, max_per_peer=1)
        connect(factory)
        refused, transport = connect(factory)
        assert transport.value() == (b"ERR busy too many connections from your address (limit 1)\n")
        assert transport.disconnecting

    def test_one_log_event_per_request(self) -> None:
        """Each request logs peer, request, outcome, bytes and seconds once."""
        protocol, transport = connect(make_factory(self.root))
        with capturedLogs() as events:
            respond(protocol, transport, b"GET a.txt\nGET nope\n")
        mine = [e for e in events if "outcome" in e]
        assert [(e["peer"], e["request"], e["outcome"], e["nbytes"]) for e in mine] == [
            ("192.0.2.7:40000", "GET a.txt", "OK", 6),
            (
                "192.0.2.7:40000",
                "GET nope",
                "ERR not-found",
                len(b"ERR not-found no such file or directory: nope\n"),
            ),
        ]
        assert all(isinstance(e["seconds"], float) for e in mine)
        assert formatEvent(mine[0]).startswith("192.0.2.7:40000 GET a.txt -> OK 6 bytes in ")

    def test_log_text_is_literal_even_with_braces_in_the_request(self) -> None:
        """The text is rendered before it reaches twisted.logger: braces in a name are text."""
        protocol, transport = connect(make_factory(self.root))
        with capturedLogs() as events:
            respond(protocol, transport, b"GET {peer}{0}{\n")
        (event,) = [e for e in events if "outcome" in e]
        assert formatEvent(event).startswith("192.0.2.7:40000 GET {peer}{0}{ -> ERR not-found ")

    def test_connection_lost_mid_body_closes_the_file(self) -> None:
        """A client vanishing mid-download releases the file descriptor."""
        protocol, transport = connect(make_factory(self.root, chunk_size=1024))
        protocol.factory.store.root.fd()  # opened once and kept on purpose
        before = len(os.listdir("/proc/self/fd"))
        protocol.dataReceived(b"GET sub/b.bin\n")
        transport.producer.resumeProducing()
        assert len(os.listdir("/proc/self/fd")) == before + 1
        transport.producer.stopProducing()
        protocol.connectionLost(None)
        assert len(os.listdir("/proc/self/fd")) == before

    def test_half_close_still_gets_every_answer(self) -> None:
        """A client that half-closes after its requests (nc -N) gets every body, then a close."""
        protocol, transport = connect(make_factory(self.root, chunk_size=1024))
        protocol.dataReceived(b"GET sub/b.bin\nGET a.txt\nGET partial-with-no-newl")
        protocol.readConnectionLost()
        assert not transport.disconnecting
        pump(transport)
        assert transport.value() == (b"OK 1048576\n" + bytes(range(256)) * 4096 + b"OK 6\nalpha\n")
        assert transport.disconnecting

    def test_half_close_when_idle_closes(self) -> None:
        """A half-close with nothing pending closes at once."""
        protocol, transport = connect(make_factory(self.root))
        protocol.readConnectionLost()
        assert transport.disconnecting

    def test_pipelined_answers_wait_while_the_client_is_not_reading(self) -> None:
        """Answers to pipelined requests are held back while the transport holds more than its
        limit, and reading stops once too much input is pending: a client that sends and never
        reads cannot make the server buffer answers without bound."""
        factory = make_factory(self.root, max_pending_input=64)
        protocol = factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 40000))
        transport = PausingTransport(limit=100)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"HELP\n" * 40)
        head = b"OK 11\n"  # the first line of each answer
        first = transport.value()
        assert first.startswith(head) and first.count(head) == 1  # one answer, then it waits
        assert transport.producerState == "paused"  # 195 bytes pending > 64: reading stopped
        answers = first.count(head)
        for _ in range(100):
            transport.drain()
            answers += transport.value().count(head)
            if answers == 40:
                break
        assert answers == 40 and transport.producerState == "paused"  # the last one is unread
        transport.drain()
        assert transport.producerState == "producing"
