"""Listening for datagrams: the UDP listener service and its endpoint strings."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import error
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from tcpfiles.core.service import listen_failure

__all__ = ["UDPListenerService", "is_udp", "parse_udp"]

log = Logger(namespace="tcpfiles.udp")


def is_udp(description: str) -> bool:
    """Whether ``description`` names a UDP endpoint (``udp:...``), well-formed or not."""
    return description.partition(":")[0].strip().lower() == "udp"


def parse_udp(description: str) -> tuple[int, str]:
    """``udp:7777:interface=127.0.0.1`` -> ``(7777, "127.0.0.1")``; ValueError if malformed."""
    kind, _, rest = description.partition(":")
    if kind.lower() != "udp" or not rest:
        raise ValueError(f"expected udp:PORT[:interface=HOST], got {description!r}")
    port_text, *extras = rest.split(":")
    interface = ""
    for extra in extras:
        key, sep, value = extra.partition("=")
        if key != "interface" or not sep:
            raise ValueError(f"unknown udp endpoint argument {extra!r}")
        interface = value
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"bad UDP port {port_text!r}")
    return int(port_text), interface


class UDPListenerService(service.Service):
    """Listen for datagrams on a ``udp:`` endpoint string while running."""

    def __init__(
        self, description: str, protocol: DatagramProtocol, reactor: Any, label: str
    ) -> None:
        self.port_number, self.interface = parse_udp(description)
        self.description = description
        self.protocol = protocol
        self.reactor = reactor
        self.label = label
        self.port: Any = None

    def privilegedStartService(self) -> None:
        """Bind; a failure (port in use, permission) raises :class:`ListenFailed`."""
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        if self.port is None:
            try:
                self.port = self.reactor.listenUDP(
                    self.port_number, self.protocol, interface=self.interface, maxPacketSize=65535
                )
            except (error.CannotListenError, OSError) as exc:
                raise listen_failure(self.label, self.description, exc) from None
            host = self.port.getHost()
            log.info(
                "{label} listening on udp {host}:{port}",
                label=self.label,
                host=host.host,
                port=host.port,
            )

    def startService(self) -> None:
        """Bind, unless done in the privileged phase."""
        if self.port is None:
            self.privilegedStartService()
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Any:
        """Stop listening."""
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None
