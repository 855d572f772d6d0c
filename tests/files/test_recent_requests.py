"""What the request loop and the store remember of recent requests: bounded, no secrets, and
never a refusal."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files import protocol, wire
from tcpfiles.tree.listing import TEMP_PREFIX
from tcpfiles.tree.paths import BadPath, NotFound
from tcpfiles.tree.store import _served_parts


class RecentRequestLinesTests(SynchronousTestCase):
    def setUp(self) -> None:
        protocol._RECENT.clear()
        self.addCleanup(protocol._RECENT.clear)

    def test_a_read_asked_again_is_the_same_request(self) -> None:
        first = protocol._read_request(b"GET a/b.txt")
        assert first == (wire.Get("a/b.txt"), "GET a/b.txt")
        assert protocol._read_request(b"GET a/b.txt") is first

    def test_no_login_line_is_kept(self) -> None:
        """A password must not stay in memory after its request."""
        request, shown = protocol._read_request(b"LOGIN alice s3cret")
        assert request == wire.Login("alice", "s3cret") and "s3cret" not in shown
        assert not any(b"s3cret" in line for line in protocol._RECENT)

    def test_uploads_bad_and_long_lines_are_not_kept(self) -> None:
        protocol._read_request(b"PUT 3 " + b"a" * 64 + b" x.bin")
        protocol._read_request(b"FROB x")
        protocol._read_request(b"GET " + b"x" * 600)
        assert protocol._RECENT == {}

    def test_bounded_oldest_first(self) -> None:
        for n in range(protocol._RECENT_LINES + 50):
            protocol._read_request(b"GET f%d" % n)
        assert len(protocol._RECENT) == protocol._RECENT_LINES
        assert b"GET f0" not in protocol._RECENT
        assert b"GET f%d" % (protocol._RECENT_LINES + 49) in protocol._RECENT


class ServedPartsTests(SynchronousTestCase):
    def test_refusals_are_refused_every_time(self) -> None:
        for _ in range(2):
            self.assertRaises(BadPath, _served_parts, "a/../b")
            self.assertRaises(NotFound, _served_parts, f"a/{TEMP_PREFIX}upload")
        assert _served_parts("/a//b") == ("a", "b")
        assert _served_parts("/a//b") is _served_parts("/a//b")
