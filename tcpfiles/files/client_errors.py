"""What the files client raises: a refusal from the server, a connection that ended, a server
of the wrong kind, a failed TLS handshake, bytes that do not match what was announced."""

from __future__ import annotations

__all__ = [
    "SILENT_CLOSE",
    "ConnectionClosed",
    "IntegrityError",
    "RemoteError",
    "TLSFailure",
    "WrongServer",
]


class RemoteError(Exception):
    """The server answered ``ERR <code> <text>``."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class ConnectionClosed(Exception):
    """The connection ended before the response was complete."""


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


class IntegrityError(Exception):
    """What arrived does not match what the server said it would send."""
