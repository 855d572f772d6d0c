"""LIST shows only names a request can carry, so every listed name can be fetched."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files import wire
from tcpfiles.testing import connect, respond
from tcpfiles.tree.listing import requestable
from tests.files.helpers import make_factory


class RequestableTests(SynchronousTestCase):
    """The rule, name by name."""

    def test_rule(self) -> None:
        """Backslashes, controls and non-UTF-8 bytes cannot be requested; bidi characters can."""
        self.assertTrue(requestable("notes.txt"))
        self.assertTrue(requestable("with space"))
        self.assertTrue(requestable("evil\u202etxt.exe"))  # escaped in LIST, fetchable by GET
        for name in ("back\\slash", "ctl\x01", "del\x7f", os.fsdecode(b"bad\xff"), "."):
            self.assertFalse(requestable(name), repr(name))


class ListedMeansFetchableTests(SynchronousTestCase):
    """Every entry LIST shows as a file is one GET serves; the others are shown as ``x``."""

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root)
        for name in (b"ok.txt", b"back\\slash", b"ctl\x01", b"bad\xff", "evil\u202etxt".encode()):
            with open(os.path.join(os.fsencode(self.root), name), "wb") as f:
                f.write(b"data:" + name)

    def _listed(self, byte_by_byte: bool) -> dict[bytes, str]:
        protocol, transport = connect(make_factory(self.root))
        out = respond(protocol, transport, b"LIST\n", byte_by_byte)
        lines = out.split(b"\n")
        self.assertEqual(lines[0], b"OK list")
        rows = [line.decode() for line in lines[1:] if line and not line.startswith(b"END")]
        return {wire.unescape_name(row.split(" ", 3)[3]): row[0] for row in rows}

    def test_kinds(self) -> None:
        """Whole or byte by byte: ok.txt and the bidi name are files; the three others ``x``."""
        expected = {
            b"ok.txt": "f",
            "evil\u202etxt".encode(): "f",
            b"back\\slash": "x",
            b"ctl\x01": "x",
            b"bad\xff": "x",
        }
        for byte_by_byte in (False, True):
            self.assertEqual(self._listed(byte_by_byte), expected)

    def test_files_are_fetched_and_x_entries_refused(self) -> None:
        """GET of a listed file (unescaped, as a client sends it) serves it; an ``x`` entry's
        name, escaped as listed, is a bad request: never a file served by mistake."""
        for raw, kind in self._listed(False).items():
            protocol, transport = connect(make_factory(self.root))
            if kind == "f":
                out = respond(protocol, transport, b"GET " + raw + b"\n")
                body = b"data:" + raw
                self.assertEqual(out, b"OK %d\n" % len(body) + body)
            else:
                line = b"GET " + wire.escape_name(raw).encode() + b"\n"
                out = respond(protocol, transport, line)
                self.assertTrue(out.startswith(b"ERR bad-request"), out)


class ErrorTextEscapedOnceTests(SynchronousTestCase):
    """The path in an ERR line is escaped once, as a LIST name is (not twice)."""

    def test_backslash_and_control(self) -> None:
        """``a\\b`` is shown ``a\\\\b`` and a control character ``\\u0001``, once."""
        protocol, transport = connect(make_factory(tempfile.mkdtemp()))
        self.addCleanup(shutil.rmtree, protocol.factory.store.root.path)
        out = respond(protocol, transport, b"GET a\\b\nGET a\x01b\n")
        first, second = out.split(b"\n")[:2]
        self.assertTrue(
            first.startswith(b"ERR bad-request ") and first.endswith(b": a\\\\b"), first
        )
        self.assertTrue(second.endswith(b": a\\u0001b"), second)


class AbortedRequestsAreLoggedTests(SynchronousTestCase):
    """A STAT or LIST cut off by a lost connection still gets its one log event."""

    def _served(self) -> str:
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root)
        with open(os.path.join(root, "a.txt"), "wb") as f:
            f.write(b"alpha")
        return root

    def _cut_off(self, request: bytes) -> list[str]:
        from twisted.internet import defer
        from twisted.logger import capturedLogs, formatEvent

        pending: list[defer.Deferred[object]] = []

        def never(f, *args):  # type: ignore[no-untyped-def]
            d: defer.Deferred[object] = defer.Deferred()
            pending.append(d)
            return d

        protocol, transport = connect(make_factory(self._served(), defer_to_thread=never))
        with capturedLogs() as events:
            protocol.dataReceived(request)
            self.assertEqual(len(pending), 1)  # the work is in the thread pool
            protocol.connectionLost(None)  # type: ignore[arg-type]
        return [formatEvent(e) for e in events]

    def test_stat(self) -> None:
        """STAT waiting for its hash: 'aborted: connection lost'."""
        logged = self._cut_off(b"STAT a.txt\n")
        self.assertEqual(
            len([t for t in logged if "STAT a.txt -> aborted: connection lost" in t]), 1
        )

    def test_list(self) -> None:
        """LIST waiting for a batch: 'aborted: connection lost'."""
        logged = self._cut_off(b"LIST\n")
        self.assertEqual(len([t for t in logged if "LIST -> aborted: connection lost" in t]), 1)


class PipelinedBurstTests(SynchronousTestCase):
    """A burst of pipelined requests is answered a bounded number per reactor turn."""

    def test_burst_takes_turns_and_bad_requests_are_logged_a_few_times(self) -> None:
        """1000 empty lines: 64 answers per turn (reading paused between), every one answered
        in the end, 16 logged and one line counting the rest at the end."""
        from twisted.logger import capturedLogs, formatEvent

        from tcpfiles.files.server import BAD_REQUESTS_LOGGED, REQUESTS_PER_TURN

        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root)
        factory = make_factory(root)
        protocol, transport = connect(factory)
        with capturedLogs() as events:
            protocol.dataReceived(b"\n" * 1000)
            self.assertEqual(transport.value().count(b"ERR bad-request"), REQUESTS_PER_TURN)
            self.assertEqual(transport.producerState, "paused")
            self.assertEqual(len(factory.clock.getDelayedCalls()), 1)  # the rest: next turn
            factory.clock.advance(0)  # (a Clock runs every turn due now; a reactor, one a turn)
            self.assertEqual(transport.value().count(b"ERR bad-request"), 1000)
            self.assertEqual(transport.producerState, "producing")
            protocol.connectionLost(None)  # type: ignore[arg-type]
        texts = [formatEvent(e) for e in events]
        self.assertEqual(len([t for t in texts if "-> ERR bad-request" in t]), BAD_REQUESTS_LOGGED)
        self.assertIn(f"{1000 - BAD_REQUESTS_LOGGED} more bad requests", " ".join(texts))
        self.assertEqual(factory.clock.getDelayedCalls(), [])
