"""The answers of the files protocol: each one's builder (for a server) and parser (for a
client) side by side, after the status line that starts every answer."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from tcpfiles.core.text import escape_name, escape_text
from tcpfiles.files.wire.framing import ProtocolError, parse_number

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
        "over-quota",  # an upload that would take the account past its storage quota
        "unauthorized",  # log in first, or a failed LOGIN (one answer for user and password)
        "busy",  # too many connections, or the server is shutting down
        "timeout",  # a request line took too long to arrive; the connection is closed
        "internal",  # the server failed; the request may be retried
    }
)


# --- status lines: the first line of every answer -------------------------------------------


def ok_line(*fields: object) -> bytes:
    """``OK field ...`` with its LF."""
    return " ".join(["OK", *map(str, fields)]).encode("utf-8") + b"\n"


def err_line(code: str, text: str) -> bytes:
    """``ERR <code> <text>`` with its LF; ``text`` is escaped so it stays one line."""
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    return f"ERR {code} {escape_text(text)}".encode() + b"\n"


class NotAStatusLine(ProtocolError):
    """An answer that starts with neither ``OK`` nor ``ERR``: not a files server at all."""


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
    raise NotAStatusLine(f"not a status line: {text[:80]!r}")


def count_line(count: int) -> bytes:
    """``OK <count>``: what GET and RESUME (bytes) and HELP (lines) answer first."""
    return b"OK %d\n" % count


def parse_count(fields: tuple[str, ...]) -> int:
    """The count of an ``OK <count>`` line."""
    count = parse_number(fields[0]) if fields else None
    if count is None:
        raise ProtocolError(f"expected OK <count>, got OK {' '.join(fields)[:80]}")
    return count


# --- LIST: OK list, one row per entry, END <n> -----------------------------------------------

#: The status line's field that starts a listing: ``OK list``, rows, then an ``END`` line.
LIST_STATUS = "list"
LIST_START = b"OK list\n"
#: Why a listing ended early (the word after ``END <n>``); a bare ``END <n>`` is complete.
LIST_TRUNCATED = "truncated"  # the server's --max-list was reached; more entries exist
LIST_FAILED = "failed"  # the server could not read the rest of the directory (logged there)
LIST_END_REASONS = frozenset({LIST_TRUNCATED, LIST_FAILED})


def format_mtime(seconds: float) -> str:
    """UTC ISO 8601 to the second: ``2026-11-21T03:46:36Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


class EntryKind(StrEnum):
    """What a remote entry is, in one spelling for LIST and STAT (a ``str``: ``"file"``).

    On the wire LIST writes a letter (``f``, ``d``, ``x``) and STAT a word (``type=file``,
    ``type=dir``); only this module knows the letters.
    """

    FILE = "file"  #: a regular file
    DIR = "dir"  #: a directory
    #: LIST only: a file or directory whose name no request can carry (not UTF-8, a control
    #: character, a backslash): listed so that nothing is hidden, but it cannot be fetched.
    UNREQUESTABLE = "unrequestable"


#: LIST's type letters, and the kind each stands for.
_KIND_OF_LETTER = {"f": EntryKind.FILE, "d": EntryKind.DIR, "x": EntryKind.UNREQUESTABLE}
_LETTER_OF_KIND = {kind: letter for letter, kind in _KIND_OF_LETTER.items()}


def list_row(kind: str, size: int | None, mtime: float, name: bytes) -> bytes:
    """One LIST row, ``<type> <size> <mtime> <name>`` with its LF; the name escaped.

    ``kind`` is an :class:`EntryKind` or its wire letter (``f``, ``d``, ``x``); ValueError
    for anything else.
    """
    letter = kind if kind in _KIND_OF_LETTER else _LETTER_OF_KIND[EntryKind(kind)]
    shown = escape_name(name)  # a plain ASCII name is its own escape, found at once
    return f"{letter} {'-' if size is None else size} {format_mtime(mtime)} {shown}\n".encode()


def decode_name(raw: bytes) -> str:
    """A name as stored (bytes) as the ``str`` the client API uses: UTF-8, with any byte that is
    not UTF-8 kept as a lone surrogate (``surrogateescape``, as ``os.fsdecode`` does)."""
    return raw.decode("utf-8", "surrogateescape")


def encode_name(name: str) -> bytes:
    """Invert :func:`decode_name`: the exact bytes of the name as stored on the server."""
    return name.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class RemoteEntry:
    """One entry of a remote directory listing: a LIST row, read.

    ``name`` is a ``str`` as every path the client sends is: a name that is not UTF-8 keeps its
    bytes as lone surrogates (:func:`decode_name`), and :attr:`raw_name` gives them back.  Such
    an entry's kind is :attr:`EntryKind.UNREQUESTABLE`; any other name can be used as a path.
    """

    kind: EntryKind
    size: int | None  # bytes; None for a directory and an unrequestable entry
    mtime: str  # UTC, ISO 8601: 2026-11-21T03:46:36Z
    name: str  # the name as stored on the server (unescaped), decoded by decode_name

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", EntryKind(self.kind))  # "file" -> EntryKind.FILE

    @property
    def raw_name(self) -> bytes:
        """The name's bytes, exactly as stored on the server."""
        return encode_name(self.name)

    @property
    def display_name(self) -> str:
        """The name as the server escaped it, safe for a terminal."""
        return escape_name(self.raw_name)


def parse_list_row(line: bytes) -> RemoteEntry:
    """One LIST row (without its LF), its name unescaped."""
    try:
        letter, size, mtime, name = line.decode("utf-8").split(" ", 3)
        kind = _KIND_OF_LETTER[letter]
        return RemoteEntry(kind, parse_size(size), mtime, decode_name(unescape_name(name)))
    except (KeyError, ValueError) as exc:
        raise ProtocolError(f"bad LIST line {line[:80]!r}") from exc


def list_end(count: int, reason: str | None = None) -> bytes:
    """The line that ends a listing of ``count`` rows: ``END <count>[ <reason>]`` and LF."""
    if reason is None:
        return f"END {count}\n".encode()
    if reason not in LIST_END_REASONS:
        raise ValueError(f"unknown listing end {reason!r}")
    return f"END {count} {reason}\n".encode()


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


# --- STAT: OK type=<kind> [size=<n>] mtime=<utc> [sha256=<hex>] ------------------------------


@dataclass(frozen=True)
class RemoteInfo:
    """What STAT said about a path."""

    kind: EntryKind  # EntryKind.FILE or EntryKind.DIR
    size: int | None  # bytes; None for a directory
    mtime: str  # UTC, ISO 8601: 2026-11-21T03:46:36Z
    sha256: str | None  # hex, for a file; None for a directory

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", EntryKind(self.kind))  # "file" -> EntryKind.FILE


def stat_line(kind: str, size: int | None, mtime: float, sha256: str | None) -> bytes:
    """The answer to STAT, its LF included."""
    fields = [f"type={kind}"]
    if size is not None:
        fields.append(f"size={size}")
    fields.append(f"mtime={format_mtime(mtime)}")
    if sha256 is not None:
        fields.append(f"sha256={sha256}")
    return ok_line(*fields)


def parse_stat(fields: tuple[str, ...]) -> RemoteInfo:
    """The fields of a STAT answer's status line; fields not known here are ignored."""
    values = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep:
            raise ProtocolError(f"expected key=value, got {item[:80]!r}")
        values[key] = value
    try:
        size = values.get("size")
        return RemoteInfo(
            _stat_kind(values["type"]),
            None if size is None else parse_size(size),
            values["mtime"],
            values.get("sha256"),
        )
    except (KeyError, ValueError) as exc:
        raise ProtocolError(f"bad STAT answer {' '.join(fields)[:120]!r}") from exc


def _stat_kind(word: str) -> EntryKind:
    """STAT's ``type=`` word: ``file`` or ``dir`` (ValueError for anything else)."""
    kind = EntryKind(word)
    if kind is EntryKind.UNREQUESTABLE:
        raise ValueError("STAT never names an unrequestable entry")
    return kind


def parse_size(text: str) -> int | None:
    """A size field (LIST, STAT): ``-`` (none) or a protocol number; ValueError otherwise."""
    if text == "-":
        return None
    value = parse_number(text)
    if value is None:
        raise ValueError(f"bad size {text[:40]!r}")
    return value


# --- the short answers: PUT and REPLACE, MKDIR, LOGIN, QUIT -----------------------------------


def send_line(size: int) -> bytes:
    """``OK send <size>``: a PUT was checked and its body may come now."""
    return ok_line("send", size)


def stored_line(size: int, sha256: str) -> bytes:
    """``OK stored <size> <sha256>``: an upload is on disk under its name."""
    return ok_line("stored", size, sha256)


def parse_stored(fields: tuple[str, ...]) -> str | None:
    """The sha256 an ``OK stored`` line names, if it names one."""
    return fields[2] if len(fields) > 2 else None


def made_line(created: bool) -> bytes:
    """MKDIR's answer: ``OK created``, or ``OK exists`` (it was a directory already)."""
    return ok_line("created" if created else "exists")


def parse_made(fields: tuple[str, ...]) -> bool:
    """Whether a MKDIR answer says the directory was created (rather than there already)."""
    return fields[:1] == ("created",)


def welcome_line(user: str) -> bytes:
    """LOGIN's answer, ``OK welcome <user>``: the account the connection now acts as."""
    return ok_line("welcome", user)


def parse_welcome(fields: tuple[str, ...]) -> str | None:
    """The account an ``OK welcome`` line names, if it names one."""
    return fields[1] if len(fields) > 1 else None


#: QUIT's answer, before the server closes.
BYE = b"OK bye\n"


# --- HELP: OK <n>, then n lines --------------------------------------------------------------

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
#: The whole answer to HELP.
HELP_ANSWER = count_line(len(HELP_LINES)) + "".join(f"{t}\n" for t in HELP_LINES).encode()


def parse_help(lines: list[bytes]) -> list[str]:
    """HELP's lines as text (anything not UTF-8 replaced: they are for people)."""
    return [line.decode("utf-8", "replace") for line in lines]


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
