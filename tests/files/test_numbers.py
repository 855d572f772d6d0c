"""Every number on the wire has a maximum: over-long numbers are a clean ERR, never a traceback."""

from __future__ import annotations

import shutil
import tempfile

from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files import wire
from tcpfiles.files.client import FilesClientProtocol, RemoteError
from tcpfiles.files.wire import MAX_NUMBER, BadRequest, Get, Put, parse_number, parse_request
from tcpfiles.testing import connect, respond
from tests.files.helpers import make_factory

SHA = "0" * 64
HUGE = "9" * 5000  # past Python's int-conversion limit (4300 digits)


class ParseNumberTests(SynchronousTestCase):
    """``parse_number`` accepts only what the protocol documents."""

    def test_accepts_zero_to_max(self) -> None:
        """0, ordinary numbers and the documented maximum are numbers."""
        self.assertEqual(parse_number("0"), 0)
        self.assertEqual(parse_number("0012"), 12)
        self.assertEqual(parse_number(str(MAX_NUMBER)), MAX_NUMBER)

    def test_refuses_everything_else(self) -> None:
        """Too many digits, too large, signs, spaces, other scripts' digits: not numbers."""
        for text in (
            "",
            HUGE,
            "1" * (wire.MAX_NUMBER_DIGITS + 1),
            str(MAX_NUMBER + 1),
            "-1",
            "+1",
            " 1",
            "1_000",
            "١٢",
            "²",
            "0x10",
        ):
            self.assertIsNone(parse_number(text), text[:30])


class RequestNumberTests(SynchronousTestCase):
    """RESUME offsets and PUT/REPLACE sizes are bounded."""

    def test_good_numbers_parse(self) -> None:
        """Ordinary offsets and sizes are kept."""
        self.assertEqual(parse_request(b"RESUME 10 a b"), Get("a b", 10))
        self.assertEqual(parse_request(f"PUT 3 {SHA} x".encode()), Put("x", 3, SHA))

    def test_over_long_numbers_are_bad_requests(self) -> None:
        """5000 digits, 20 digits or 2**63 give BadRequest naming the limit, never raise."""
        for number in (HUGE, "1" * 20, str(MAX_NUMBER + 1)):
            lines = (f"RESUME {number} a", f"PUT {number} {SHA} x", f"REPLACE {number} {SHA} x")
            for line in lines:
                parsed = parse_request(line.encode())
                self.assertIsInstance(parsed, BadRequest, line[:40])
                assert isinstance(parsed, BadRequest)
                self.assertIn(str(MAX_NUMBER), parsed.message)


class ServerNumberTests(SynchronousTestCase):
    """The server answers over-long numbers with ERR bad-request and keeps the connection."""

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root)
        with open(f"{self.root}/a.txt", "wb") as f:
            f.write(b"alpha\n")

    def _session(self, byte_by_byte: bool) -> bytes:
        protocol, transport = connect(make_factory(self.root))
        data = f"RESUME {HUGE} a.txt\nPUT {HUGE} {SHA} b\nGET a.txt\n".encode()
        with capturedLogs() as events:
            out = respond(protocol, transport, data, byte_by_byte)
        self.assertFalse([e for e in events if e.get("isError") or "log_failure" in e])
        self.assertFalse(transport.disconnecting)
        return out

    def test_whole(self) -> None:
        """Sent in one piece: two bad-request answers, then the GET is served."""
        out = self._session(False)
        lines = out.split(b"\n")
        self.assertTrue(lines[0].startswith(b"ERR bad-request offset out of range: at most "))
        self.assertTrue(lines[1].startswith(b"ERR bad-request size out of range: at most "))
        self.assertTrue(out.endswith(b"OK 6\nalpha\n"))

    def test_byte_by_byte(self) -> None:
        """Sent a byte at a time: the same answers."""
        self.assertEqual(self._session(True), self._session(False))


class ClientNumberTests(SynchronousTestCase):
    """A server sending an over-long count is a protocol error for the client, not a crash."""

    def test_huge_count_fails_the_request(self) -> None:
        """``OK <5000 digits>`` fails the pending GET with ConnectionClosed and aborts."""
        protocol = FilesClientProtocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        d = protocol.request("GET a", "bytes", lambda _: None)
        protocol.dataReceived(f"OK {HUGE}\n".encode())
        failure = self.failureResultOf(d)
        self.assertIn("expected OK <count>", failure.getErrorMessage())
        self.assertFalse(failure.check(RemoteError))
