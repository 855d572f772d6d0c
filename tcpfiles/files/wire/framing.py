"""How the files protocol's bytes are cut: lines, numbers, and what breaks the protocol."""

from __future__ import annotations

from collections.abc import Iterator

#: Longest request (or status) line, without its line ending.
MAX_LINE = 8192
#: Every number on the wire (sizes, offsets, counts) is at most this many ASCII digits ...
MAX_NUMBER_DIGITS = 19
#: ... and at most this value (the largest file size an ``off_t`` can hold).
MAX_NUMBER = 2**63 - 1


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


def text_line(text: str) -> bytes:
    """``text`` as one line: UTF-8 and its LF; ValueError if it holds a line break of its own."""
    if "\n" in text or "\r" in text:
        raise ValueError("a request cannot contain a line break")
    return text.encode("utf-8") + b"\n"
