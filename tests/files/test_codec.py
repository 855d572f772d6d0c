"""The wire codec: line splitting, request parsing, status lines, name escaping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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

STREAM = b"GET a.txt\r\nLIST\nSTAT dir/with space.txt\nRESUME 10 x y\nHELP\nQUIT\n"
EXPECTED = [Get("a.txt"), List(""), Stat("dir/with space.txt"), Get("x y", 10), Help(), Quit()]


def feed_all(buffer: LineBuffer, pieces: list[bytes]) -> list[bytes]:
    lines = []
    for piece in pieces:
        buffer.feed(piece)
        lines.extend(buffer.lines())
    return lines


def test_lines_whole_and_byte_by_byte():
    """The same stream gives the same requests whole or one byte at a time."""
    whole = feed_all(LineBuffer(), [STREAM])
    trickle = feed_all(LineBuffer(), [STREAM[i : i + 1] for i in range(len(STREAM))])
    assert whole == trickle
    assert [parse_request(line) for line in whole] == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_parses_the_same(cuts):
    """Property: however the stream is cut into pieces, the requests are the same."""
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert [parse_request(line) for line in feed_all(LineBuffer(), pieces)] == EXPECTED


def test_line_limit_exactly():
    """A line of exactly the limit passes (with CRLF too); one byte more is too long."""
    buffer = LineBuffer(max_line=16)
    buffer.feed(b"x" * 16 + b"\r\n")
    assert list(buffer.lines()) == [b"x" * 16]
    buffer.feed(b"y" * 17 + b"\n")
    with pytest.raises(LineTooLong):
        list(buffer.lines())


def test_unterminated_line_over_limit_is_detected_early():
    """Bytes without a LF past the limit are refused before more arrive."""
    buffer = LineBuffer(max_line=16)
    buffer.feed(b"z" * 17)  # could still be 16 bytes + CR
    assert list(buffer.lines()) == []
    buffer.feed(b"z")
    with pytest.raises(LineTooLong):
        list(buffer.lines())


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"get notes.txt", Get("notes.txt")),
        (b"GET  lead", Get(" lead")),
        (b"GET /a.txt", Get("/a.txt")),
        (b"GET", BadRequest("usage: GET <path>")),
        (b"RESUME x a", BadRequest("usage: RESUME <offset> <path>")),
        (b"RESUME -1 a", BadRequest("usage: RESUME <offset> <path>")),
        (b"RESUME \xd9\xa3 a", BadRequest("usage: RESUME <offset> <path>")),  # Arabic 3
        (b"RESUME 5", BadRequest("usage: RESUME <offset> <path>")),
        (b"LIST sub", List("sub")),
        (b"mkdir a/b c", Mkdir("a/b c")),
        (b"STAT", BadRequest("usage: STAT <path>")),
        (b"HELP me", BadRequest("HELP takes no arguments")),
        (b"quit", Quit()),
        (b"PUT 3 " + b"ab" * 32 + b" a b", Put("a b", 3, "ab" * 32)),
        (b"replace 0 " + b"AB" * 32 + b" x", Put("x", 0, "ab" * 32, replace=True)),
        (b"PUT 3 nothex a", BadRequest("usage: PUT <size> <sha256-hex> <path>")),
        (b"PUT -1 " + b"ab" * 32 + b" a", BadRequest("usage: PUT <size> <sha256-hex> <path>")),
        (b"MKDIR", BadRequest("usage: MKDIR <path>")),
        (b"", BadRequest("empty request; try HELP")),
        (b"\xff\xfe", BadRequest("request is not valid UTF-8")),
        (b"FETCH\x1b[2J x", BadRequest("unknown command FETCH\\u001b[2J; try HELP")),
    ],
)
def test_parse_request(line, expected):
    """Each request form, and each malformed one, parses to what docs/protocol.md says."""
    assert parse_request(line) == expected


@given(st.binary(max_size=300))
def test_random_lines_never_raise(line):
    """Property: any bytes parse to a request or a BadRequest, never an exception."""
    assert parse_request(line) is not None


def test_status_lines():
    """OK and ERR lines round-trip; an unknown code cannot be sent; junk is a protocol error."""
    assert wire.ok_line(5) == b"OK 5\n"
    assert wire.parse_status(b"OK 5") == wire.Ok(("5",))
    assert wire.err_line("not-found", "gone\nOK 1") == b"ERR not-found gone\\u000aOK 1\n"
    assert wire.parse_status(b"ERR busy try later") == wire.Err("busy", "try later")
    with pytest.raises(ValueError):
        wire.err_line("oops", "x")
    with pytest.raises(wire.ProtocolError):
        wire.parse_status(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"plain name.txt", "plain name.txt"),
        (b"x\nOK 0", "x\\u000aOK 0"),
        (b"back\\slash", "back\\\\slash"),
        (b"latin1-\xe9", "latin1-\\xe9"),
        ("caf\u00e9".encode(), "caf\u00e9"),
        ("evil\u202etxt.exe".encode(), "evil\\u202etxt.exe"),
        (b"\x1b[31mred", "\\u001b[31mred"),
    ],
)
def test_escape_name(raw, shown):
    """Names are shown verbatim unless unsafe; unsafe bytes become visible escapes."""
    assert wire.escape_name(raw) == shown
    assert wire.unescape_name(shown) == raw


@given(st.binary(max_size=64))
def test_escape_round_trips_and_stays_on_one_line(raw):
    """Property: escaping is reversible and never yields a control character."""
    shown = wire.escape_name(raw)
    assert wire.unescape_name(shown) == raw
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in shown)


def test_format_mtime():
    """mtimes are UTC ISO 8601 to the second."""
    assert wire.format_mtime(0) == "1970-01-01T00:00:00Z"
    assert wire.format_mtime(1_700_000_000.9) == "2023-11-14T22:13:20Z"
