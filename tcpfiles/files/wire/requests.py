"""The requests of the files protocol: objects, their lines (:func:`request_line`, for a
client) and back (:func:`parse_request`, for a server)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from tcpfiles.core.text import escape_name, escape_text
from tcpfiles.files.wire.framing import MAX_NUMBER, MAX_NUMBER_DIGITS, parse_number, text_line

#: What follows an answer's ``OK`` (a request's ``answer``): nothing more, ``<n>`` bytes,
#: ``<n>`` lines, or LIST rows up to their ``END`` line.
STATUS, BYTES, LINES, LISTING = "status", "bytes", "lines", "listing"


@dataclass(frozen=True)
class Get:
    """``GET <path>`` or ``RESUME <offset> <path>``: ``OK <n>``, then a file's bytes."""

    path: str
    offset: int = 0
    answer: ClassVar[str] = BYTES


@dataclass(frozen=True)
class List:
    """``LIST [<path>]``: the entries of a directory (the root when path is empty)."""

    path: str
    answer: ClassVar[str] = LISTING


@dataclass(frozen=True)
class Stat:
    """``STAT <path>``: type, size, mtime and, for a file, its sha256."""

    path: str
    answer: ClassVar[str] = STATUS


@dataclass(frozen=True)
class Help:
    """``HELP``: ``OK <n>``, then n lines listing the requests."""

    answer: ClassVar[str] = LINES


@dataclass(frozen=True)
class Quit:
    """``QUIT``: say goodbye and close."""

    answer: ClassVar[str] = STATUS


@dataclass(frozen=True)
class Put:
    """``PUT <size> <sha256> <path>`` (new file) or ``REPLACE ...`` (may overwrite)."""

    path: str
    size: int
    sha256: str
    replace: bool = False
    answer: ClassVar[str] = STATUS


@dataclass(frozen=True)
class Mkdir:
    """``MKDIR <path>``: create a directory (its parent must exist)."""

    path: str
    answer: ClassVar[str] = STATUS


@dataclass(frozen=True)
class Login:
    """``LOGIN <user> <password>``: the password is the rest of the line (spaces allowed)."""

    user: str
    password: str = field(repr=False)
    answer: ClassVar[str] = STATUS

    def __str__(self) -> str:
        return f"LOGIN {self.user} ****"


@dataclass(frozen=True)
class BadRequest:
    """A line that is not a valid request; answered with ``ERR bad-request``."""

    message: str


#: The requests a client can send; :func:`parse_request` may also give :class:`BadRequest`.
Sendable = Get | List | Stat | Help | Quit | Put | Mkdir | Login
Request = Sendable | BadRequest


def request_line(request: Sendable) -> bytes:
    """A request's line, LF included; ValueError if a field would break it into two lines."""
    match request:
        case Get(path, 0):
            text = f"GET {path}"
        case Get(path, offset):
            text = f"RESUME {offset} {path}"
        case List(path):
            text = f"LIST {path}" if path else "LIST"
        case Stat(path):
            text = f"STAT {path}"
        case Put(path, size, sha256, replace):
            text = f"{'REPLACE' if replace else 'PUT'} {size} {sha256} {path}"
        case Mkdir(path):
            text = f"MKDIR {path}"
        case Login(user, password):
            text = f"LOGIN {user} {password}"
        case Help():
            text = "HELP"
        case Quit():
            text = "QUIT"
        case _:
            raise ValueError(f"not a request to send: {request!r}")
    return text_line(text)


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
    parse = _ARGUMENTS.get(verb)
    if parse is not None:
        return parse(verb, rest)
    if not verb:
        return BadRequest("empty request; try HELP")
    return BadRequest(f"unknown command {escape_text(verb[:32])}; try HELP")


def _path(make: Callable[[str], Request]) -> Callable[[str, str], Request]:
    """The arguments of a request that takes one path (the rest of the line)."""
    return lambda verb, rest: make(rest) if rest else BadRequest(f"usage: {verb} <path>")


def _nothing(make: Callable[[], Request]) -> Callable[[str, str], Request]:
    """The arguments of a request that takes none."""
    return lambda verb, rest: BadRequest(f"{verb} takes no arguments") if rest else make()


def _resume(verb: str, rest: str) -> Request:
    offset_text, _, path = rest.partition(" ")
    offset = parse_number(offset_text)
    if offset is None or not path:
        return BadRequest(_number_problem("offset", offset_text, "RESUME <offset> <path>"))
    return Get(path, offset)


def _put(verb: str, rest: str) -> Request:
    size_text, _, rest = rest.partition(" ")
    digest, _, path = rest.partition(" ")
    size = parse_number(size_text)
    if size is None or not path or not _is_sha256(digest):
        return BadRequest(_number_problem("size", size_text, f"{verb} <size> <sha256-hex> <path>"))
    return Put(path, size, digest.lower(), verb == "REPLACE")


def _login(verb: str, rest: str) -> Request:
    user, _, password = rest.partition(" ")
    if not user or not password:
        return BadRequest("usage: LOGIN <user> <password>")
    return Login(user, password)


#: Each verb and what reads the rest of its line.
_ARGUMENTS: dict[str, Callable[[str, str], Request]] = {
    "GET": _path(Get),
    "RESUME": _resume,
    "LIST": lambda verb, rest: List(rest),
    "STAT": _path(Stat),
    "HELP": _nothing(Help),
    "QUIT": _nothing(Quit),
    "PUT": _put,
    "REPLACE": _put,
    "MKDIR": _path(Mkdir),
    "LOGIN": _login,
}


def shown(request: Request, line: bytes) -> str:
    """A request line as logs show it: escaped, cut at 200 bytes, never a password."""
    if isinstance(request, Login):
        line = str(request).encode()
    return escape_name(line[:200])


def _number_problem(what: str, text: str, usage: str) -> str:
    """``usage: ...``, or what is wrong with an all-digit number that is out of range."""
    if text.isascii() and text.isdigit() and parse_number(text) is None:
        return f"{what} out of range: at most {MAX_NUMBER} ({MAX_NUMBER_DIGITS} digits)"
    return f"usage: {usage}"


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)
