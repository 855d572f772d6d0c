"""The wire codec: line splitting, request parsing, status lines, name escaping."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files import wire
from tcpfiles.files.wire import (
    BadRequest,
    Get,
    Help,
    LineBuffer,
    LineTooLong,
    List,
    Mkdir,
    Put,
    Quit,
    Stat,
    parse_request,
)
from tests.helpers import cases, with_cases

STREAM = b"GET a.txt\r\nLIST\nSTAT dir/with space.txt\nRESUME 10 x y\nHELP\nQUIT\n"
EXPECTED = [Get("a.txt"), List(""), Stat("dir/with space.txt"), Get("x y", 10), Help(), Quit()]


def feed_all(buffer: LineBuffer, pieces: list[bytes]) -> list[bytes]:
    lines = []
    for piece in pieces:
        buffer.feed(piece)
        lines.extend(buffer.lines())
    return lines


@with_cases
class CodecTests(SynchronousTestCase):
    """Line splitting, request parsing, status lines, name escaping."""

    def test_lines_whole_and_byte_by_byte(self) -> None:
        """The same stream gives the same requests whole or one byte at a time."""
        whole = feed_all(LineBuffer(), [STREAM])
        trickle = feed_all(LineBuffer(), [STREAM[i : i + 1] for i in range(len(STREAM))])
        assert whole == trickle
        assert [parse_request(line) for line in whole] == EXPECTED

    @given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
    def test_any_split_parses_the_same(self, cuts) -> None:
        """Property: however the stream is cut into pieces, the requests are the same."""
        points = sorted(set(cuts))
        pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
        assert [parse_request(line) for line in feed_all(LineBuffer(), pieces)] == EXPECTED

    def test_line_limit_exactly(self) -> None:
        """A line of exactly the limit passes (with CRLF too); one byte more is too long."""
        buffer = LineBuffer(max_line=16)
        buffer.feed(b"x" * 16 + b"\r\n")
        assert list(buffer.lines()) == [b"x" * 16]
        buffer.feed(b"y" * 17 + b"\n")
        with self.assertRaises(LineTooLong):
            list(buffer.lines())

    def test_unterminated_line_over_limit_is_detected_early(self) -> None:
        """Bytes without a LF past the limit are refused before more arrive."""
        buffer = LineBuffer(max_line=16)
        buffer.feed(b"z" * 17)  # could still be 16 bytes + CR
        assert list(buffer.lines()) == []
        buffer.feed(b"z")
        with self.assertRaises(LineTooLong):
            list(buffer.lines())

    @cases(
        get_lowercase=(b"get notes.txt", Get("notes.txt")),
        get_leading_space=(b"GET  lead", Get(" lead")),
        get_absolute=(b"GET /a.txt", Get("/a.txt")),
        get_no_path=(b"GET", BadRequest("usage: GET <path>")),
        resume_not_a_number=(b"RESUME x a", BadRequest("usage: RESUME <offset> <path>")),
        resume_negative=(b"RESUME -1 a", BadRequest("usage: RESUME <offset> <path>")),
        resume_arabic_3=(
            b"RESUME \xd9\xa3 a",
            BadRequest("usage: RESUME <offset> <path>"),
        ),
        resume_no_path=(b"RESUME 5", BadRequest("usage: RESUME <offset> <path>")),
        list_sub=(b"LIST sub", List("sub")),
        mkdir_lowercase=(b"mkdir a/b c", Mkdir("a/b c")),
        stat_no_path=(b"STAT", BadRequest("usage: STAT <path>")),
        help_with_argument=(b"HELP me", BadRequest("HELP takes no arguments")),
        quit_lowercase=(b"quit", Quit()),
        put=(b"PUT 3 " + b"ab" * 32 + b" a b", Put("a b", 3, "ab" * 32)),
        replace_lowercase_upper_hex=(
            b"replace 0 " + b"AB" * 32 + b" x",
            Put("x", 0, "ab" * 32, replace=True),
        ),
        put_not_hex=(b"PUT 3 nothex a", BadRequest("usage: PUT <size> <sha256-hex> <path>")),
        put_negative=(
            b"PUT -1 " + b"ab" * 32 + b" a",
            BadRequest("usage: PUT <size> <sha256-hex> <path>"),
        ),
        mkdir_no_path=(b"MKDIR", BadRequest("usage: MKDIR <path>")),
        empty=(b"", BadRequest("empty request; try HELP")),
        not_utf8=(b"\xff\xfe", BadRequest("request is not valid UTF-8")),
        unknown_with_escape=(
            b"FETCH\x1b[2J x",
            BadRequest("unknown command FETCH\\u001b[2J; try HELP"),
        ),
    )
    def test_parse_request(self, line, expected) -> None:
        """Each request form, and each malformed one, parses to what docs/protocol.md says."""
        assert parse_request(line) == expected

    @given(st.binary(max_size=300))
    def test_random_lines_never_raise(self, line) -> None:
        """Property: any bytes parse to a request or a BadRequest, never an exception."""
        assert parse_request(line) is not None

    def test_status_lines(self) -> None:
        """OK and ERR lines round-trip; an unknown code cannot be sent; junk is a protocol error."""
        assert wire.ok_line(5) == b"OK 5\n"
        assert wire.parse_status(b"OK 5") == wire.Ok(("5",))
        assert wire.err_line("not-found", "gone\nOK 1") == b"ERR not-found gone\\u000aOK 1\n"
        assert wire.parse_status(b"ERR busy try later") == wire.Err("busy", "try later")
        with self.assertRaises(ValueError):
            wire.err_line("oops", "x")
        with self.assertRaises(wire.ProtocolError):
            wire.parse_status(b"HTTP/1.1 200 OK")

    @cases(
        plain=(b"plain name.txt", "plain name.txt"),
        newline=(b"x\nOK 0", "x\\u000aOK 0"),
        backslash=(b"back\\slash", "back\\\\slash"),
        latin1=(b"latin1-\xe9", "latin1-\\xe9"),
        utf8=("caf\u00e9".encode(), "caf\u00e9"),
        bidi=("evil\u202etxt.exe".encode(), "evil\\u202etxt.exe"),
        terminal_escape=(b"\x1b[31mred", "\\u001b[31mred"),
    )
    def test_escape_name(self, raw, shown) -> None:
        """Names are shown verbatim unless unsafe; unsafe bytes become visible escapes."""
        assert wire.escape_name(raw) == shown
        assert wire.unescape_name(shown) == raw

    @given(st.binary(max_size=64))
    def test_escape_round_trips_and_stays_on_one_line(self, raw) -> None:
        """Property: escaping is reversible and never yields a control character."""
        shown = wire.escape_name(raw)
        assert wire.unescape_name(shown) == raw
        assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in shown)

    def test_format_mtime(self) -> None:
        """mtimes are UTC ISO 8601 to the second."""
        assert wire.format_mtime(0) == "1970-01-01T00:00:00Z"
        assert wire.format_mtime(1_700_000_000.9) == "2023-11-14T22:13:20Z"
