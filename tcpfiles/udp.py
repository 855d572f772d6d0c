"""``udp-echo``: each datagram back to its sender; and listening on ``udp:`` endpoint strings.

Twisted has no endpoint API for UDP, so :func:`parse_udp` reads ``udp:PORT[:interface=HOST]``
and :class:`UDPListenerService` binds it.  The reply is never larger than the request, so the
service cannot be used to amplify traffic.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python import usage

from tcpfiles.behaviours import Behaviour

log = Logger(namespace="tcpfiles.udp")


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


class UDPEcho(DatagramProtocol):
    """Return every datagram to where it came from."""

    transport: Any

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Send it back."""
        self.transport.write(datagram, addr)


class UDPListenerService(service.Service):
    """Listen for datagrams on a ``udp:`` endpoint string while running."""

    def __init__(
        self, description: str, protocol: DatagramProtocol, reactor: Any, label: str
    ) -> None:
        self.port_number, self.interface = parse_udp(description)
        self.protocol = protocol
        self.reactor = reactor
        self.label = label
        self.port: Any = None

    def privilegedStartService(self) -> None:
        """Bind (a failure is raised, so twistd exits non-zero)."""
        super().privilegedStartService()
        if self.port is None:
            self.port = self.reactor.listenUDP(
                self.port_number, self.protocol, interface=self.interface, maxPacketSize=65535
            )
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
        super().startService()

    def stopService(self) -> Any:
        """Stop listening."""
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


udp_echo = Behaviour(
    "udp-echo",
    "returns each datagram to its sender",
    "udp:7777",
    usage.Options,
    lambda options, context: UDPEcho(),
)
