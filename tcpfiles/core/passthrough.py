"""What a protocol reads from, and sets on, its transport, passed to the real one beneath a
wrapper that stands between them: the kernel's guard (:mod:`tcpfiles.core.guard`) and the PROXY
layer (:mod:`tcpfiles.core.proxy`) are both such wrappers, and a behaviour beneath them sees the
connection as if nothing stood in between."""

from __future__ import annotations

from typing import Any

__all__ = ["TransportPassThrough"]


class TransportPassThrough:
    """Mixed in before ``twisted.protocols.policies.ProtocolWrapper`` (whose own
    ``loseConnection`` sets ``disconnecting`` on the wrapper instead of asking the transport):
    closing, ``disconnecting``, the read size and the per-write limit are the real
    transport's, and half-close events reach the wrapped protocol."""

    transport: Any
    wrappedProtocol: Any

    def loseConnection(self) -> None:
        """Close once the buffers are flushed."""
        self.transport.loseConnection()

    @property
    def disconnecting(self) -> bool:
        """Whether the real transport is closing (however it was asked to)."""
        return bool(getattr(self.transport, "disconnecting", False))

    @property
    def bufferSize(self) -> int:
        """The real transport's read size (``tcpfiles.core.sending.adapt_read_size``)."""
        return int(self.transport.bufferSize)

    @bufferSize.setter
    def bufferSize(self, value: int) -> None:
        self.transport.bufferSize = value

    @property
    def SEND_LIMIT(self) -> int:  # noqa: N802 - Twisted's name
        """The real transport's per-write limit (raised by the copying body producer)."""
        return int(self.transport.SEND_LIMIT)

    @SEND_LIMIT.setter
    def SEND_LIMIT(self, value: int) -> None:  # noqa: N802 - Twisted's name
        self.transport.SEND_LIMIT = value

    def readConnectionLost(self) -> None:
        """The peer sent all it will send (IHalfCloseableProtocol)."""
        self.wrappedProtocol.readConnectionLost()

    def writeConnectionLost(self) -> None:
        """The peer reads no more (IHalfCloseableProtocol)."""
        self.wrappedProtocol.writeConnectionLost()
