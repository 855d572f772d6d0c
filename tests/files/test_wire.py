"""Every message of the files protocol round-trips through tcpfiles.files.wire, and the bytes it
builds are the ones docs/protocol.md shows."""

from __future__ import annotations

import calendar
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files import wire
from tcpfiles.files.client import FilesClient, FilesClientProtocol, Listing, RemoteError

SHA = hashlib.sha256(b"hello\n").hexdigest()
EMPTY_SHA = hashlib.sha256(b"").hexdigest()
MTIME = calendar.timegm((2026, 11, 20, 9, 15, 0))
SHOWN_MTIME = "2026-11-20T09:15:00Z"
DOC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")

REQUESTS: list[wire.Sendable] = [
    wire.Get("notes.txt"),
    wire.Get("dir/with space.txt", 7),
    wire.List(""),
    wire.List("docs"),
    wire.Stat("caf\u00e9/\u202e.txt"),
    wire.Help(),
    wire.Quit(),
    wire.Put("notes/hello.txt", 6, SHA),
    wire.Put("x", 0, EMPTY_SHA, replace=True),
    wire.Mkdir("new dir"),
    wire.Login("ann", "a password with spaces"),
]


def pieces(data: bytes, byte_by_byte: bool) -> list[bytes]:
    """``data`` whole, or one byte at a time."""
    return [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]


def parsed_lines(data: bytes, byte_by_byte: bool) -> list[wire.Request]:
    """What a server makes of ``data``, fed whole or a byte at a time."""
    buffer = wire.LineBuffer()
    requests = []
    for piece in pieces(data, byte_by_byte):
        buffer.feed(piece)
        requests.extend(wire.parse_request(line) for line in buffer.lines())
    return requests


class RequestRoundTripTests(SynchronousTestCase):
    """Each request, built by :func:`request_line` and parsed by :func:`parse_request`."""

    def test_each_request_whole_and_byte_by_byte(self) -> None:
        """Build, then parse (whole or a byte at a time, LF or CRLF): the same object, and
        building it again gives the same bytes."""
        for request in REQUESTS:
            line = wire.request_line(request)
            for ending in (line, line[:-1] + b"\r\n"):
                for byte_by_byte in (False, True):
                    self.assertEqual(parsed_lines(ending, byte_by_byte), [request], line)
            self.assertEqual(wire.request_line(wire.parse_request(line[:-1])), line)  # type: ignore[arg-type]

    def test_a_pipelined_stream(self) -> None:
        """All of them in one stream: the same objects in order, however it is cut."""
        stream = b"".join(wire.request_line(r) for r in REQUESTS)
        self.assertEqual(parsed_lines(stream, False), REQUESTS)
        self.assertEqual(parsed_lines(stream, True), REQUESTS)

    def test_the_answer_each_request_expects(self) -> None:
        """GET is followed by bytes, LIST by rows, HELP by lines, the others by nothing."""
        expected = {wire.Get: wire.BYTES, wire.List: wire.LISTING, wire.Help: wire.LINES}
        for request in REQUESTS:
            self.assertEqual(request.answer, expected.get(type(request), wire.STATUS))

    def test_a_line_break_cannot_be_sent(self) -> None:
        """A field holding CR or LF would be two requests: refused before anything is sent."""
        for request in (wire.Get("a\nQUIT"), wire.Stat("a\r"), wire.Login("u", "p\nw")):
            self.assertRaises(ValueError, wire.request_line, request)

    @given(
        st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), min_size=1),
        st.integers(min_value=0, max_value=wire.MAX_NUMBER),
    )
    def test_any_path_and_number(self, path: str, number: int) -> None:
        """Property: any path (spaces, any script, leading blanks) and any protocol number
        round-trip in every request that carries them."""
        for request in (
            wire.Get(path, number),
            wire.List(path),
            wire.Stat(path),
            wire.Mkdir(path),
            wire.Put(path, number, SHA, replace=number % 2 == 1),
        ):
            line = wire.request_line(request)
            self.assertEqual(wire.parse_request(line[:-1]), request)


class ClientAnswerTests(SynchronousTestCase):
    """Each answer, built by the server's builder and read by the client, whole and a byte at a
    time: the client sends the request's own line and gets the object back."""

    def exchange(
        self, send: Callable[[FilesClient], Any], answer: bytes, byte_by_byte: bool
    ) -> tuple[bytes, Any]:
        """The bytes the client sent and what its Deferred fired with, once fed ``answer``."""
        protocol = FilesClientProtocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        d = send(FilesClient(protocol))
        for piece in pieces(answer, byte_by_byte):
            protocol.dataReceived(piece)
        self.assertFalse(transport.disconnecting)
        return transport.value(), self.successResultOf(d)

    def check(
        self, send: Callable[[FilesClient], Any], request: wire.Sendable, answer: bytes, result: Any
    ) -> None:
        for byte_by_byte in (False, True):
            self.assertEqual(
                self.exchange(send, answer, byte_by_byte), (wire.request_line(request), result)
            )

    def test_get(self) -> None:
        """``OK <n>`` and n bytes: the count, and the bytes in the sink."""
        got: list[bytes] = []
        self.check(
            lambda c: c.get("a", got.append, 3), wire.Get("a", 3), wire.count_line(5) + b"hello", 5
        )
        self.assertEqual(b"".join(got), b"hello" * 2)

    def test_list(self) -> None:
        """``OK list``, rows and ``END``: the entries, names unescaped; a truncated end says so."""
        names = [b"notes.txt", b"x\nOK 0", b"bad\xff", "caf\u00e9".encode()]
        rows = b"".join(wire.list_row("f", 13, MTIME, name) for name in names)
        entries = [wire.RemoteEntry("file", 13, SHOWN_MTIME, wire.decode_name(n)) for n in names]
        for reason in (None, wire.LIST_TRUNCATED, wire.LIST_FAILED):
            answer = wire.LIST_START + rows + wire.list_end(len(names), reason)
            for byte_by_byte in (False, True):
                sent, listing = self.exchange(lambda c: c.list("d"), answer, byte_by_byte)
                self.assertEqual(sent, wire.request_line(wire.List("d")))
                self.assertEqual((listing, listing.reason), (Listing(entries), reason))

    def test_stat(self) -> None:
        """A file's four fields, a directory's two."""
        for info in (
            wire.RemoteInfo("file", 13, SHOWN_MTIME, SHA),
            wire.RemoteInfo("dir", None, SHOWN_MTIME, None),
        ):
            answer = wire.stat_line(info.kind, info.size, MTIME, info.sha256)
            self.check(lambda c: c.stat("p"), wire.Stat("p"), answer, info)

    def test_short_answers(self) -> None:
        """MKDIR's created or exists, LOGIN's welcome, QUIT's bye, HELP's lines."""
        for created in (True, False):
            self.check(lambda c: c.mkdir("d"), wire.Mkdir("d"), wire.made_line(created), created)
        self.check(
            lambda c: c.login("ann", "pw"), wire.Login("ann", "pw"), wire.welcome_line("ann"), "ann"
        )
        self.check(lambda c: c.quit(), wire.Quit(), wire.BYE, None)
        self.check(lambda c: c.help(), wire.Help(), wire.HELP_ANSWER, list(wire.HELP_LINES))

    def test_put(self) -> None:
        """``OK send <size>``, then ``OK stored <size> <sha256>``: the stored sha256."""
        answer = wire.send_line(0) + wire.stored_line(0, EMPTY_SHA)
        self.check(
            lambda c: c.put("e", -1, 0, EMPTY_SHA), wire.Put("e", 0, EMPTY_SHA), answer, EMPTY_SHA
        )

    def test_error(self) -> None:
        """``ERR <code> <text>``: a RemoteError with both, the text as escaped on the wire."""
        for byte_by_byte in (False, True):
            protocol = FilesClientProtocol()
            protocol.makeConnection(StringTransport())
            d = FilesClient(protocol).stat("x\n")  # refused before anything is sent
            self.assertTrue(self.failureResultOf(d).check(ValueError))
            d = FilesClient(protocol).stat("gone")
            for piece in pieces(wire.err_line("not-found", "gone\nOK 1"), byte_by_byte):
                protocol.dataReceived(piece)
            error = self.failureResultOf(d, RemoteError).value
            self.assertEqual((error.code, error.text), ("not-found", "gone\\u000aOK 1"))


class DocumentedBytesTests(SynchronousTestCase):
    """The examples of docs/protocol.md are what the builders make and what the parsers read."""

    def test_every_request_in_the_examples(self) -> None:
        """Each ``> `` line of the sessions parses to a request whose line is that line."""
        sent = [line[2:] for line in DOC.splitlines() if line.startswith("> ")]
        self.assertGreater(len(sent), 15)
        for text in sent:
            if text in ("hello", "abc"):  # upload bodies, not requests
                continue
            request = wire.parse_request(text.encode())
            if text == "FROB":  # the example of an unknown verb
                self.assertEqual(request, wire.BadRequest("unknown command FROB; try HELP"))
                continue
            self.assertNotIsInstance(request, wire.BadRequest)
            self.assertEqual(wire.request_line(request), text.encode() + b"\n")  # type: ignore[arg-type]

    def test_every_answer_in_the_examples(self) -> None:
        """The answers shown are the builders' bytes, and the parsers read them back."""
        lines = set(DOC.splitlines())
        stat = wire.stat_line("file", 13, MTIME, SHA_NOTES)
        for built in (
            wire.LIST_START,
            wire.list_row("d", None, MTIME, b"docs"),
            wire.list_row("f", 13, MTIME, b"notes.txt"),
            wire.list_row("f", 8, MTIME, b"guide.md"),
            wire.list_end(2),
            wire.list_end(1),
            wire.count_line(13),
            wire.count_line(6),
            stat,
            wire.stat_line("dir", None, MTIME, None),
            wire.err_line("not-a-file", "is a directory: docs"),
            wire.err_line("not-found", "no such file or directory: missing.txt"),
            wire.err_line("bad-request", "'.' and '..' are not allowed in paths: ../etc/passwd"),
            wire.err_line("read-only", "uploads are not enabled for you on this server"),
            wire.err_line("bad-request", "unknown command FROB; try HELP"),
            wire.BYE,
            wire.made_line(True),
            wire.send_line(6),
            wire.stored_line(6, SHA),
            wire.send_line(3),
        ):
            self.assertIn(built.decode().removesuffix("\n"), lines)
        info = wire.parse_stat(self.ok_fields(stat))
        self.assertEqual(info, wire.RemoteInfo("file", 13, SHOWN_MTIME, SHA_NOTES))
        self.assertEqual(wire.parse_stored(self.ok_fields(wire.stored_line(6, SHA))), SHA)
        row = wire.parse_list_row(wire.list_row("d", None, MTIME, b"docs")[:-1])
        self.assertEqual(row, wire.RemoteEntry("dir", None, SHOWN_MTIME, "docs"))

    def test_help_as_shown(self) -> None:
        """The HELP answer of the session, line for line."""
        start = DOC.index("> HELP\n") + len("> HELP\n")
        self.assertTrue(DOC[start:].startswith(wire.HELP_ANSWER.decode()))

    def test_escaped_name_as_shown(self) -> None:
        """A file named ``x`` LF ``OK 0`` is listed as the documentation says."""
        row = wire.list_row("x", None, MTIME, b"x\nOK 0").decode()
        self.assertIn(row.replace(SHOWN_MTIME, "<mtime>").strip(), DOC)

    def ok_fields(self, line: bytes) -> tuple[str, ...]:
        status = wire.parse_status(line[:-1])
        assert isinstance(status, wire.Ok)
        return status.fields


SHA_NOTES = "853ff93762a06ddbf722c4ebe9ddd66d8f63ddaea97f521c3ecc20da7c976020"
