"""The files wire protocol as pure functions and small objects: no I/O here.

Requests are single UTF-8 lines ending in LF (CRLF accepted). :class:`LineBuffer` splits a byte
stream into bounded lines; :func:`parse_request` turns one line into a frozen request object.
Responses start with a status line made by :func:`ok_line` or :func:`err_line` and read back with
:func:`parse_status`.  ``docs/protocol.md`` is the specification this module implements.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tcpfiles.core.text import escape_name, escape_text

#: Longest request (or status) line, without its line ending.
MAX_LINE = 8192

#: Every number on the wire (sizes, offsets, counts) is at most this many ASCII digits ...
MAX_NUMBER_DIGITS = 19
#: ... and at most this value (the largest file size an ``off_t`` can hold).
MAX_NUMBER = 2**63 - 1

#: Every error code a server may send; documented in docs/protocol.md.
ERROR_CODES = frozenset(
    {
        "bad-request",  # the request cannot be understood (syntax, bad path, bad offset)
        "not-found",  # no such file or directory (also: outside the root, escaping link)
        "forbidden",  # exists inside the root but the server may not read it
        "not-a-file",  # a directory, FIFO, device or socket where a regular file is needed
        "not-a-directory",  # LIST of something that is not a directory
        "too-long",  # request line over the limit; the connection is closed
        "read-only",  # uploads are not enabled on this server
        "exists",  # an upload (PUT) or MKDIR would replace something that is there
        "mismatch",  # an uploaded body does not match its announced sha256
        "too-large",  # an upload larger than the server accepts
        "unauthorized",  # log in first, or a failed LOGIN (one answer for user and password)
        "busy",  # too many connections, or the server is shutting down
        "timeout",  # a request line took too long to arrive; the connection is closed
        "internal",  # the server failed; the request may be retried
    }
)


class ProtocolError(Exception):
    """Bytes that do not follow the protocol (a peer's fault, never ours)."""


class LineTooLong(ProtocolError):
    """A line grew past the limit before its LF arrived."""


class LineBuffer:
    """Split a byte stream into lines of at most ``max_line`` bytes (LF or CRLF endings).

    Lines are returned without their ending.  Once a line is too long, :meth:`lines` raises
    :class:`LineTooLong` and the buffer stays unusable: the caller is expected to close.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._scan_from = 0

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buffer += data

    @property
    def pending(self) -> int:
        """How many bytes are buffered that are not yet part of a returned line."""
        return len(self._buffer)

    def take(self, n: int) -> bytes:
        """Remove and return up to ``n`` raw bytes from the front of the buffer."""
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        self._scan_from = 0
        return chunk

    def next_line(self) -> bytes | None:
        """Return the next complete line, or None when no complete line is buffered."""
        end = self._buffer.find(b"\n", self._scan_from)
        if end < 0:
            self._scan_from = len(self._buffer)
            # A CR may still be followed by LF, so allow one extra byte before complaining.
            if len(self._buffer) > self.max_line + 1:
                raise LineTooLong(f"line longer than {self.max_line} bytes")
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scan_from = 0
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_line:
            raise LineTooLong(f"line longer than {self.max_line} bytes")
        return line

    def lines(self) -> Iterator[bytes]:
        """Yield every complete line buffered so far."""
        while (line := self.next_line()) is not None:
            yield line


# --- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Get:
    """``GET <path>`` or ``RESUME <offset> <path>``: send a file's bytes from ``offset``."""

    path: str
    offset: int = 0


@dataclass(frozen=True)
class List:
    """``LIST [<path>]``: the entries of a directory (the root when path is empty)."""

    path: str


@dataclass(frozen=True)
class Stat:
    """``STAT <path>``: type, size, mtime and, for a file, its sha256."""

    path: str


@dataclass(frozen=True)
class Help:
    """``HELP``: the list of commands."""


@dataclass(frozen=True)
class Quit:
    """``QUIT``: say goodbye and close."""


@dataclass(frozen=True)
class Put:
    """``PUT <size> <sha256> <path>`` (new file) or ``REPLACE ...`` (may overwrite)."""

    path: str
    size: int
    sha256: str
    replace: bool = False


@dataclass(frozen=True)
class Mkdir:
    """``MKDIR <path>``: create a directory (its parent must exist)."""

    path: str


@dataclass(frozen=True)
class Login:
    """``LOGIN <user> <password>``: the password is the rest of the line (spaces allowed)."""

    user: str
    password: str = field(repr=False)

    def __str__(self) -> str:
        return f"LOGIN {self.user} ****"


@dataclass(frozen=True)
class BadRequest:
    """A line that is not a valid request; answered with ``ERR bad-request``."""

    message: str


Request = Get | List | Stat | Help | Quit | Put | Mkdir | Login | BadRequest

_HELP = (
    ("GET <path>", "OK <size>, then <size> bytes of the file"),
    ("RESUME <offset> <path>", "OK <n>, then the n = size - offset bytes from <offset> on"),
    ("LIST [<path>]", "OK list, lines <type> <size> <mtime> <name>, then END <n>"),
    ("STAT <path>", "OK type=file size=<n> mtime=<utc> sha256=<hex>"),
    ("PUT <size> <sha256> <path>", "OK send <size>, the body, then OK stored <size> <sha256>"),
    ("REPLACE <size> <sha256> <path>", "the same, replacing a file that exists"),
    ("MKDIR <path>", "OK created, or OK exists"),
    ("LOGIN <user> <password>", "OK welcome <user> (on a server with accounts)"),
    ("HELP", "this text"),
    ("QUIT", "OK bye, then the server closes"),
)
HELP_LINES = (
    *(f"{request:<31} {answer}" for request, answer in _HELP),
    "Paths are /-separated and relative to the served root. Errors: ERR <code> <text>.",
)


def help_answer() -> bytes:
    """The whole answer to HELP: ``OK <n>`` and its n lines."""
    body = "".join(f"{text}\n" for text in HELP_LINES).encode()
    return ok_line(len(HELP_LINES)) + body


def parse_request(line: bytes) -> Request:
    """Turn one request line (without its line ending) into a request object.

    Never raises: anything malformed becomes :class:`BadRequest`.  Verbs are case-insensitive;
    the path is the rest of the line, taken verbatim (spaces allowed, nothing decoded).
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return BadRequest("request is not valid UTF-8")
    verb, _, rest = text.partition(" ")
    verb = verb.upper()
    if verb == "GET":
        if not rest:
            return BadRequest("usage: GET <path>")
        return Get(rest)
    if verb == "RESUME":
        offset_text, _, path = rest.partition(" ")
        offset = parse_number(offset_text)
        if offset is None or not path:
            return BadRequest(_number_problem("offset", offset_text, "RESUME <offset> <path>"))
        return Get(path, offset)
    if verb == "LIST":
        return List(rest)
    if verb == "STAT":
        if not rest:
            return BadRequest("usage: STAT <path>")
        return Stat(rest)
    if verb in ("HELP", "QUIT") and rest:
        return BadRequest(f"{verb} takes no arguments")
    if verb == "HELP":
        return Help()
    if verb == "QUIT":
        return Quit()
    if verb in ("PUT", "REPLACE"):
        size_text, _, rest = rest.partition(" ")
        digest, _, path = rest.partition(" ")
        size = parse_number(size_text)
        if size is None or not path or not _is_sha256(digest):
            usage = f"{verb} <size> <sha256-hex> <path>"
            return BadRequest(_number_problem("size", size_text, usage))
        return Put(path, size, digest.lower(), verb == "REPLACE")
    if verb == "LOGIN":
        user, _, password = rest.partition(" ")
        if not user or not password:
            return BadRequest("usage: LOGIN <user> <password>")
        return Login(user, password)
    if verb == "MKDIR":
        if not rest:
            return BadRequest("usage: MKDIR <path>")
        return Mkdir(rest)
    if not verb:
        return BadRequest("empty request; try HELP")
    return BadRequest(f"unknown command {escape_text(verb[:32])}; try HELP")


def _number_problem(what: str, text: str, usage: str) -> str:
    """``usage: ...``, or what is wrong with an all-digit number that is out of range."""
    if text.isascii() and text.isdigit() and parse_number(text) is None:
        return f"{what} out of range: at most {MAX_NUMBER} ({MAX_NUMBER_DIGITS} digits)"
    return f"usage: {usage}"


def parse_number(text: str) -> int | None:
    """A number field of the protocol, or None when it is not one.

    ASCII digits only (no sign, no spaces, no other scripts' digits), at most
    :data:`MAX_NUMBER_DIGITS` of them and at most :data:`MAX_NUMBER`: a 5000-digit number is
    refused here, before Python's own int-conversion limit could raise.
    """
    if not text or len(text) > MAX_NUMBER_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= MAX_NUMBER else None


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


# --- responses --------------------------------------------------------------------------------


def ok_line(*fields: object) -> bytes:
    """``OK field ...`` with its LF."""
    return " ".join(["OK", *map(str, fields)]).encode("utf-8") + b"\n"


def err_line(code: str, text: str) -> bytes:
    """``ERR <code> <text>`` with its LF; ``text`` is escaped so it stays one line."""
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    return f"ERR {code} {escape_text(text)}".encode() + b"\n"


@dataclass(frozen=True)
class Ok:
    """A parsed ``OK`` status line."""

    fields: tuple[str, ...]


@dataclass(frozen=True)
class Err:
    """A parsed ``ERR`` status line."""

    code: str
    text: str


def parse_status(line: bytes) -> Ok | Err:
    """Read a status line (without its ending); raises :class:`ProtocolError` if it is neither."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("status line is not valid UTF-8") from None
    word, _, rest = text.partition(" ")
    if word == "OK":
        return Ok(tuple(rest.split(" ")) if rest else ())
    if word == "ERR":
        code, _, message = rest.partition(" ")
        if not code:
            raise ProtocolError("ERR status line without a code")
        return Err(code, message)
    raise ProtocolError(f"not a status line: {text[:80]!r}")


def format_mtime(seconds: float) -> str:
    """UTC ISO 8601 to the second: ``2026-11-21T03:46:36Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


def stat_line(kind: str, size: int | None, mtime: float, sha256: str | None) -> bytes:
    """The STAT answer: ``OK type=<kind> [size=<n>] mtime=<utc> [sha256=<hex>]`` and LF."""
    fields = [f"type={kind}"]
    if size is not None:
        fields.append(f"size={size}")
    fields.append(f"mtime={format_mtime(mtime)}")
    if sha256 is not None:
        fields.append(f"sha256={sha256}")
    return ok_line(*fields)


@dataclass(frozen=True)
class RemoteInfo:
    """What STAT said."""

    kind: str  # "file" or "dir"
    size: int | None
    mtime: str
    sha256: str | None


def parse_stat(fields: tuple[str, ...]) -> RemoteInfo:
    """The fields of a STAT answer's status line; unknown fields are ignored."""
    values = parse_fields(fields)
    try:
        size = values.get("size")
        return RemoteInfo(
            values["type"],
            None if size is None else parse_size(size),
            values["mtime"],
            values.get("sha256"),
        )
    except (KeyError, ValueError) as exc:
        raise ProtocolError(f"bad STAT answer {' '.join(fields)[:120]!r}") from exc


def parse_size(text: str) -> int | None:
    """A size field: ``-`` (none) or a protocol number; ValueError otherwise."""
    if text == "-":
        return None
    value = parse_number(text)
    if value is None:
        raise ValueError(f"bad size {text[:40]!r}")
    return value


def parse_fields(fields: tuple[str, ...]) -> dict[str, str]:
    """``("type=file", "size=3")`` -> ``{"type": "file", "size": "3"}``."""
    result = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep:
            raise ProtocolError(f"expected key=value, got {item[:80]!r}")
        result[key] = value
    return result


# --- LIST rows and their final line ---------------------------------------------------------

#: The status line's field that starts a listing: ``OK list``, rows, then an ``END`` line.
LIST_STATUS = "list"
#: Why a listing ended early (the word after ``END <n>``); a bare ``END <n>`` is complete.
LIST_TRUNCATED = "truncated"  # the server's --max-list was reached; more entries exist
LIST_FAILED = "failed"  # the server could not read the rest of the directory (logged there)
LIST_END_REASONS = frozenset({LIST_TRUNCATED, LIST_FAILED})


def list_row(kind: str, size: int | None, mtime: float, name: bytes) -> bytes:
    """One LIST row, ``<type> <size> <mtime> <name>`` with its LF; the name escaped."""
    shown = escape_name(name)  # a plain ASCII name is its own escape, found at once
    return f"{kind} {'-' if size is None else size} {format_mtime(mtime)} {shown}\n".encode()


def list_end(count: int, reason: str | None = None) -> bytes:
    """The line that ends a listing of ``count`` rows: ``END <count>[ <reason>]`` and LF."""
    if reason is None:
        return f"END {count}\n".encode()
    if reason not in LIST_END_REASONS:
        raise ValueError(f"unknown listing end {reason!r}")
    return f"END {count} {reason}\n".encode()


@dataclass(frozen=True)
class RemoteEntry:
    """One entry of a remote directory listing."""

    kind: str  # "f" a file, "d" a directory, "x" an entry whose name no request can carry
    size: int | None
    mtime: str  # UTC, ISO 8601
    name: bytes  # the name as stored on the server (unescaped)

    @property
    def display_name(self) -> str:
        """The name as the server escaped it, safe for a terminal."""
        return escape_name(self.name)


def parse_list_row(line: bytes) -> RemoteEntry:
    """One LIST row (without its LF), its name unescaped."""
    try:
        kind, size, mtime, name = line.decode("utf-8").split(" ", 3)
        return RemoteEntry(kind, parse_size(size), mtime, unescape_name(name))
    except ValueError as exc:
        raise ProtocolError(f"bad LIST line {line[:80]!r}") from exc


def parse_list_end(line: bytes) -> tuple[int, str | None] | None:
    """``(count, reason)`` of an ``END`` line (reason None: complete); None for any other line.

    Rows start with their type (``f``, ``d`` or ``x``), so they are never taken for the end.  A
    malformed ``END`` line raises :class:`ProtocolError`.
    """
    if not line.startswith(b"END"):
        return None
    fields = line.split(b" ")
    count = parse_number(fields[1].decode("ascii", "replace")) if len(fields) > 1 else None
    if fields[0] != b"END" or not 2 <= len(fields) <= 3 or count is None:
        raise ProtocolError(f"bad end of listing {line[:80]!r}")
    reason = fields[2].decode("ascii", "replace") if len(fields) == 3 else None
    if reason is not None and reason not in LIST_END_REASONS:
        raise ProtocolError(f"bad end of listing {line[:80]!r}")
    return count, reason


# --- escaping names for LIST and messages -----------------------------------------------------


def unescape_name(text: str) -> bytes:
    """Invert :func:`escape_name`; raises :class:`ProtocolError` on a malformed escape."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        kind = text[i + 1 : i + 2]
        width = {"\\": 0, "x": 2, "u": 4, "U": 8}.get(kind)
        if width is None:
            raise ProtocolError(f"bad escape at {i} in {text[:80]!r}")
        digits = text[i + 2 : i + 2 + width]
        if len(digits) != width or (width and not all(c in "0123456789abcdef" for c in digits)):
            raise ProtocolError(f"bad escape at {i} in {text[:80]!r}")
        if kind == "\\":
            out += b"\\"
        elif kind == "x":
            out.append(int(digits, 16))
        else:
            out += chr(int(digits, 16)).encode("utf-8", "surrogatepass")
        i += 2 + width
    return bytes(out)
