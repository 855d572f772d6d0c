"""The client API against the real server protocol, connected in memory (iosim)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from twisted.internet import defer, error, interfaces, task
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tcpfiles.files import wire
from tcpfiles.files.client import (
    CannotConnect,
    ConnectionClosed,
    EntryKind,
    FilesClient,
    FilesClientProtocol,
    FilesError,
    IncompleteListing,
    IntegrityError,
    Listing,
    ProtocolViolation,
    RemoteEntry,
    RemoteError,
    TLSFailure,
    WrongServer,
    client_endpoint,
    connect,
)
from tcpfiles.files.transfer import fetch
from tcpfiles.files.wire import ProtocolError
from tcpfiles.testing import client_pair, settle
from tests.files.helpers import make_factory
from tests.helpers import temporary_directory


class ServedTests(SynchronousTestCase):
    """A client talking to a server of a small tree."""

    def setUp(self) -> None:
        self.tmp = temporary_directory(self)
        self.served = root = self.tmp / "files"
        (root / "d").mkdir(parents=True)
        (root / "a.txt").write_bytes(b"alpha")
        (root / "d" / "big.bin").write_bytes(os.urandom(3 << 20))
        (root / "odd\u202ename").write_bytes(b"?")  # listed escaped, fetched by its real name
        self.client, self.pump = client_pair(make_factory(root, chunk_size=256 * 1024))

    def test_pipelined_requests(self) -> None:
        """Several requests issued at once get their own answers, in order."""
        client, pump = self.client, self.pump
        chunks: list[bytes] = []
        d1 = client.get("a.txt", chunks.append)
        d2 = client.list("")
        d3 = client.stat("d/big.bin")
        d4 = client.get("nope", chunks.append)
        self.assertEqual(settle(d1, pump), 5)
        self.assertEqual(b"".join(chunks), b"alpha")
        entries = settle(d2, pump)
        self.assertEqual(
            [(e.kind, e.name) for e in entries],
            [
                ("file", "a.txt"),
                ("dir", "d"),
                ("file", "odd\u202ename"),
            ],
        )
        self.assertEqual(entries[2].display_name, "odd\\u202ename")
        info = settle(d3, pump)
        self.assertEqual((info.kind, info.size), ("file", 3 << 20))
        failure = settle(d4, pump)
        self.assertTrue(failure.check(RemoteError) and failure.value.code == "not-found")

    def test_resume_from_offset(self) -> None:
        """get(offset=n) delivers the file from byte n on."""
        chunks: list[bytes] = []
        got = settle(self.client.get("d/big.bin", chunks.append, offset=1000), self.pump)
        self.assertEqual(got, (3 << 20) - 1000)
        self.assertEqual(b"".join(chunks), (self.served / "d" / "big.bin").read_bytes()[1000:])

    def test_fetch_verifies_and_renames(self) -> None:
        """fetch writes a .part, checks size and sha256, and renames it into place."""
        destination = self.tmp / "big.bin"
        progress: list[int] = []
        result = settle(
            fetch(self.client, "d/big.bin", str(destination), on_progress=progress.append),
            self.pump,
        )
        data = (self.served / "d" / "big.bin").read_bytes()
        self.assertEqual(destination.read_bytes(), data)
        self.assertEqual(result.sha256, hashlib.sha256(data).hexdigest())
        self.assertEqual(sum(progress), len(data))
        self.assertFalse(list(self.tmp.glob("*.part")))

    def test_fetch_detects_a_file_changed_between_stat_and_get(self) -> None:
        """If the bytes do not match STAT's sha256, nothing is left behind."""
        client, pump = self.client, self.pump
        destination = self.tmp / "a.txt"
        d = fetch(client, "a.txt", str(destination))
        # STAT is answered first; change the file before the GET is served.
        for _ in range(100):
            if client.protocol.pending and client.protocol.pending[0].kind == "bytes":
                break
            pump.pump()
        (self.served / "a.txt").write_bytes(b"ALPHA")
        failure = settle(d, pump)
        self.assertTrue(failure.check(IntegrityError))
        self.assertEqual(list(self.tmp.glob("a.txt*")), [])


class ConnectionTests(SynchronousTestCase):
    """What a lost connection or a server that breaks the protocol does to the requests."""

    def test_connection_lost_fails_every_pending_request(self) -> None:
        """A dropped connection (even mid-body) fails what was outstanding with ConnectionClosed."""
        protocol = FilesClientProtocol()
        protocol.makeConnection(StringTransport())
        client = FilesClient(protocol)
        got: list[bytes] = []
        d1, d2 = client.get("a", got.append), client.list()
        protocol.dataReceived(b"OK 10\n12345")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(got, [b"12345"])
        for d in (d1, d2, client.stat("late")):
            failures: list[Failure] = []
            d.addErrback(failures.append)
            self.assertTrue(failures and failures[0].check(ConnectionClosed))

    def garbage_from_server_fails_cleanly(self, reply: bytes) -> None:
        """A reply that is not the protocol fails the requests and drops the connection."""
        protocol = FilesClientProtocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        d = FilesClient(protocol).list()
        protocol.dataReceived(reply)
        failures: list[Failure] = []
        d.addErrback(failures.append)
        self.assertTrue(failures and failures[0].check(ConnectionClosed, ProtocolError))
        self.assertTrue(transport.disconnecting or failures[0].check(ProtocolError))

    def test_garbage_from_server_fails_cleanly_http(self) -> None:
        """An HTTP status line fails the requests and drops the connection."""
        self.garbage_from_server_fails_cleanly(b"HTTP/1.0 200 OK\n")

    def test_garbage_from_server_fails_cleanly_ok_nonsense(self) -> None:
        """``OK nonsense`` to a LIST fails the requests and drops the connection."""
        self.garbage_from_server_fails_cleanly(b"OK nonsense\n")

    def test_garbage_from_server_fails_cleanly_bad_row(self) -> None:
        """A listing row that is not one fails the request."""
        self.garbage_from_server_fails_cleanly(b"OK 1\nbad\n")


class EndpointTests(SynchronousTestCase):
    """The forms a server can be named in."""

    def endpoint_kind(self, server: str) -> str:
        return type(client_endpoint(MemoryReactorClock(), server)).__name__

    def test_client_endpoint_forms_host(self) -> None:
        """HOST names a server."""
        self.assertEqual(self.endpoint_kind("localhost"), "HostnameEndpoint")

    def test_client_endpoint_forms_host_port(self) -> None:
        """HOST:PORT names a server."""
        self.assertEqual(self.endpoint_kind("example.org:9"), "HostnameEndpoint")

    def test_client_endpoint_forms_ipv6_port(self) -> None:
        """[v6]:PORT names a server."""
        self.assertEqual(self.endpoint_kind("[::1]:8888"), "HostnameEndpoint")

    def test_client_endpoint_forms_tcp_string(self) -> None:
        """A tcp: endpoint string names a server."""
        self.assertEqual(self.endpoint_kind("tcp:host=127.0.0.1:port=1"), "TCP4ClientEndpoint")

    def test_client_endpoint_forms_unix_string(self) -> None:
        """A unix: endpoint string names a server."""
        self.assertEqual(self.endpoint_kind("unix:/tmp/x.sock"), "UNIXClientEndpoint")

    def rejects(self, server: str) -> None:
        """A bad port is a ValueError, for a clear usage message."""
        self.assertRaises(ValueError, client_endpoint, MemoryReactorClock(), server)

    def test_client_endpoint_rejects_port_zero(self) -> None:
        """Port 0 is a ValueError."""
        self.rejects("h:0")

    def test_client_endpoint_rejects_port_too_big(self) -> None:
        """Port 70000 is a ValueError."""
        self.rejects("h:70000")

    def test_client_endpoint_rejects_port_word(self) -> None:
        """A port that is a word is a ValueError."""
        self.rejects("h:port")

    def test_client_endpoint_rejects_ipv6_bad_port(self) -> None:
        """[::1]:x is a ValueError."""
        self.rejects("[::1]:x")


class EntryTests(SynchronousTestCase):
    """One spelling of kinds, names as str (undecodable bytes kept), for LIST and STAT alike."""

    def listing(self, rows: bytes) -> Listing:
        protocol = FilesClientProtocol()
        protocol.makeConnection(StringTransport())
        d = FilesClient(protocol).list("dir")
        protocol.dataReceived(b"OK list\n" + rows)
        return self.successResultOf(d)

    def test_kinds_are_words(self) -> None:
        """f, d and x on the wire are EntryKind.FILE, DIR and UNREQUESTABLE; str-equal too."""
        entries = self.listing(
            wire.list_row("f", 1, 0, b"a")
            + wire.list_row("d", None, 0, b"b")
            # an entry no request can carry: listed, not fetchable
            + wire.list_row("x", None, 0, b"c\n")
            + b"END 3\n"
        )
        self.assertEqual(
            [e.kind for e in entries],
            [EntryKind.FILE, EntryKind.DIR, EntryKind.UNREQUESTABLE],
        )
        self.assertEqual([e.kind for e in entries], ["file", "dir", "unrequestable"])
        self.assertIs(RemoteEntry("file", 1, "t", "a").kind, EntryKind.FILE)

    def test_stat_kind_is_the_same_word(self) -> None:
        """STAT's type=file is the EntryKind a LIST row's f is."""
        protocol = FilesClientProtocol()
        protocol.makeConnection(StringTransport())
        d = FilesClient(protocol).stat("a")
        protocol.dataReceived(wire.stat_line("file", 1, 0, "0" * 64))
        self.assertIs(self.successResultOf(d).kind, EntryKind.FILE)

    def test_a_letter_is_not_a_kind(self) -> None:
        """The wire's letters stay in the wire: RemoteEntry("f", ...) is a ValueError."""
        self.assertRaises(ValueError, RemoteEntry, "f", 1, "t", "a")

    def test_names_are_str_and_keep_their_bytes(self) -> None:
        """A UTF-8 name is itself; one that is not keeps its bytes as surrogates (raw_name)."""
        entries = self.listing(
            wire.list_row("f", 1, 0, "caf\u00e9".encode())
            + wire.list_row("x", None, 0, b"bad\xff")
            + b"END 2\n"
        )
        self.assertEqual([e.name for e in entries], ["bad\udcff", "caf\u00e9"])
        self.assertEqual([e.raw_name for e in entries], [b"bad\xff", "caf\u00e9".encode()])
        self.assertEqual(entries[0].display_name, "bad\\xff")

    def test_sorted_by_their_bytes(self) -> None:
        """The order is the names' bytes' (as ls showed it before names were str): U+E000 is
        EE 80 80, before the byte FF, though its code point sorts after U+DCFF."""
        entries = self.listing(
            wire.list_row("f", 1, 0, "\ue000".encode())  # EE 80 80
            + wire.list_row("x", None, 0, b"\xff")
            + b"END 2\n"
        )
        self.assertEqual([e.raw_name for e in entries], [b"\xee\x80\x80", b"\xff"])

    def test_a_row_of_an_unknown_kind_breaks_the_protocol(self) -> None:
        """A type letter the protocol does not have: ProtocolViolation, connection dropped."""
        protocol = FilesClientProtocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        d = FilesClient(protocol).list()
        protocol.dataReceived(b"OK list\nq 1 2026-01-01T00:00:00Z a\nEND 1\n")
        self.failureResultOf(d, ProtocolViolation)
        self.assertTrue(transport.disconnecting)


class ErrorTests(SynchronousTestCase):
    """Every error of the client is a FilesError; the kinds are told apart by type."""

    def test_one_base(self) -> None:
        """RemoteError, CannotConnect, ConnectionClosed (and its kinds), IntegrityError."""
        for kind in (
            RemoteError,
            IncompleteListing,
            CannotConnect,
            ConnectionClosed,
            ProtocolViolation,
            WrongServer,
            TLSFailure,
            IntegrityError,
        ):
            self.assertTrue(issubclass(kind, FilesError), kind)
        self.assertTrue(issubclass(ProtocolViolation, ProtocolError))

    def test_a_bad_answer_fails_what_is_waiting_and_drops_the_connection(self) -> None:
        """A STAT answer without its type: that request and the next fail; the line is cut."""
        protocol = FilesClientProtocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        client = FilesClient(protocol)
        first, second = client.stat("a"), client.stat("b")
        protocol.dataReceived(b"OK size=1 mtime=x\n")
        self.failureResultOf(first, ProtocolViolation)
        self.failureResultOf(second, ProtocolViolation)
        self.assertTrue(transport.disconnecting)
        self.failureResultOf(client.stat("c"), ConnectionClosed)


@implementer(interfaces.IStreamClientEndpoint)
class OneTransport:
    """An endpoint that connects at once over a StringTransport, or fails with ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.transport = StringTransport()

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        if self.error is not None:
            return defer.fail(self.error)
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(self.transport)
        return defer.succeed(protocol)


class ConnectTests(SynchronousTestCase):
    """connect() takes a string or an endpoint object; failures to connect are CannotConnect."""

    def test_an_endpoint_object(self) -> None:
        """An IStreamClientEndpoint is used as it is."""
        endpoint = OneTransport()
        client = self.successResultOf(connect(task.Clock(), endpoint))
        client.stat("a")
        self.assertEqual(endpoint.transport.value(), b"STAT a\n")

    def test_tls_options_go_with_a_string_only(self) -> None:
        """ca or insecure with an endpoint object: a ValueError (the endpoint has its own)."""
        self.assertRaises(ValueError, connect, task.Clock(), OneTransport(), insecure=True)
        self.assertRaises(TypeError, connect, task.Clock(), 8888)

    def test_refused_is_cannot_connect(self) -> None:
        """Twisted's ConnectionRefusedError becomes CannotConnect, with it as its cause."""
        refused = error.ConnectionRefusedError()
        failure = self.failureResultOf(connect(task.Clock(), OneTransport(refused)))
        self.assertIsInstance(failure.value, CannotConnect)
        self.assertIs(failure.value.cause, refused)
        self.assertEqual(str(failure.value), str(refused))

    def test_other_failures_are_unchanged(self) -> None:
        """What is not a failure to connect (a bug, a TLS setup error) is not disguised."""
        failure = self.failureResultOf(connect(task.Clock(), OneTransport(KeyError("bug"))))
        self.assertIsInstance(failure.value, KeyError)
