"""LIST shows only names a request can carry, so every listed name can be fetched."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files import codec
from tcpfiles.files.listing import requestable
from tests.files.helpers import connect, make_factory, respond


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
    """Every name LIST shows is one GET serves; the others are not shown."""

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root)
        for name in (b"ok.txt", b"back\\slash", b"ctl\x01", b"bad\xff", "evil\u202etxt".encode()):
            with open(os.path.join(os.fsencode(self.root), name), "wb") as f:
                f.write(b"data:" + name)

    def _listed(self, byte_by_byte: bool) -> list[bytes]:
        protocol, transport = connect(make_factory(self.root))
        out = respond(protocol, transport, b"LIST\n", byte_by_byte)
        lines = out.split(b"\n")
        self.assertEqual(lines[0], b"OK list")
        rows = [line for line in lines[1:] if line and not line.startswith(b"END")]
        return sorted(codec.unescape_name(row.decode().split(" ", 3)[3]) for row in rows)

    def test_only_requestable_names_are_listed(self) -> None:
        """Whole or byte by byte, LIST shows ok.txt and the bidi name, not the three others."""
        for byte_by_byte in (False, True):
            self.assertEqual(
                self._listed(byte_by_byte), sorted([b"ok.txt", "evil\u202etxt".encode()])
            )

    def test_every_listed_name_is_fetched(self) -> None:
        """GET of each listed name (unescaped, as a client sends it) serves that file."""
        for raw in self._listed(False):
            protocol, transport = connect(make_factory(self.root))
            out = respond(protocol, transport, b"GET " + raw + b"\n")
            body = b"data:" + raw
            self.assertEqual(out, b"OK %d\n" % len(body) + body)
