"""What the files client raises, as one small hierarchy under :class:`FilesError`.

::

    FilesError                   anything the client API raises about the server or a transfer
    ├── RemoteError              the server answered ERR <code> <text> (.code, .text)
    │   └── IncompleteListing    a listing the server ended early (tcpfiles.files.client)
    ├── CannotConnect            no connection was made (refused, unknown host, timed out)
    ├── ConnectionClosed         the connection ended before the answer was complete
    │   ├── ProtocolViolation    the server's bytes broke the protocol: the connection is dropped
    │   ├── WrongServer          what answered is not a files server (or it needs TLS)
    │   └── TLSFailure           the TLS handshake or the certificate check failed
    └── IntegrityError           what arrived does not match the size or sha256 announced

Not in it, on purpose: ``ValueError`` for a request the caller got wrong before anything is sent
(a server string that does not parse, a path with a line break), and ``OSError`` for a local
file (a missing file to upload, a full disk on download).  Retrying can help with a
:class:`ConnectionClosed` (but not its :class:`WrongServer` and :class:`TLSFailure`), a
:class:`CannotConnect` and a ``RemoteError`` whose code is ``busy``; that is what
:class:`~tcpfiles.files.session.Session` retries.
"""

from __future__ import annotations

from tcpfiles.files.wire import ProtocolError

__all__ = [
    "SILENT_CLOSE",
    "CannotConnect",
    "ConnectionClosed",
    "FilesError",
    "IntegrityError",
    "ProtocolViolation",
    "RemoteError",
    "TLSFailure",
    "WrongServer",
]


class FilesError(Exception):
    """The base of every error the files client raises about the server or a transfer."""


class RemoteError(FilesError):
    """The server answered ``ERR <code> <text>``: ``code`` is one of docs/protocol.md's error
    codes (``not-found``, ``exists``, ``busy``, ...), ``text`` the server's explanation."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class CannotConnect(FilesError):
    """No connection could be made: refused, unknown host, unreachable, timed out.

    ``cause`` (also ``__cause__``) is Twisted's own error (``ConnectionRefusedError``,
    ``DNSLookupError``, ``TimeoutError``, ...); the message is the cause's.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause
        self.__cause__ = cause


class ConnectionClosed(FilesError):
    """The connection ended before the answer was complete (also: it made no progress for the
    client's ``timeout``).  Every request still waiting fails with it."""


class ProtocolViolation(ConnectionClosed, ProtocolError):
    """The server sent something the protocol does not allow (a bad status line, row or count).

    The connection is dropped, since nothing after it can be trusted, and every request still
    waiting fails with this error.  It is also a :class:`~tcpfiles.files.wire.ProtocolError`.
    """


class WrongServer(ConnectionClosed):
    """What answered is not a tcpfiles files server (or needs TLS): retrying cannot help."""


#: What a client says when the server closed before a single byte of its first answer.
SILENT_CLOSE = (
    "the server closed the connection without answering: if it is a TLS server, use "
    "tls:HOST:PORT or --ca FILE; otherwise it is not a tcpfiles files server"
)


class TLSFailure(ConnectionClosed):
    """The TLS handshake failed: an untrusted certificate, a wrong host name, an old version.

    Not worth retrying: the same server will fail the same way.
    """


class IntegrityError(FilesError):
    """What arrived does not match what the server said it would send (its size or sha256)."""
