"""The udp-echo behaviour as a plugin: its options, and how it is built."""

from __future__ import annotations

from twisted.python import usage

from tcpfiles.core.options import positive_float, positive_int, size
from tcpfiles.core.plugin import Behaviour, Context
from tcpfiles.udp_echo.protocol import EchoSettings, Rates, UDPEcho

__all__ = ["UDPEchoOptions", "port_floor", "udp_echo"]


def port_floor(text: str) -> int:
    """A port number, 0 to 65535."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"must be 0 to 65535, got {text}")
    return value


port_floor.coerceDoc = "0 to 65535."  # type: ignore[attr-defined]


class UDPEchoOptions(usage.Options):
    """Options of ``udp-echo``: what it refuses to answer and how fast it may answer."""

    optParameters = [
        [
            "min-source-port",
            None,
            1024,
            "Drop datagrams from source ports below this (services); 0: only port 0.",
            port_floor,
        ],
        ["peer-rate", None, 100.0, "Replies per second to one address.", positive_float],
        ["peer-bytes", None, 1 << 20, "Reply bytes per second to one address.", size],
        ["total-rate", None, 10_000.0, "Replies per second in total.", positive_float],
        ["total-bytes", None, 32 << 20, "Reply bytes per second in total.", size],
        ["burst", None, 2.0, "Seconds of each rate a full bucket holds.", positive_float],
        ["max-peers", None, 10_000, "Source addresses remembered at once.", positive_int],
        ["log-interval", None, 10.0, "Seconds between reports of drops.", positive_float],
    ]

    def settings(self) -> EchoSettings:
        """The parsed options as :class:`EchoSettings`."""
        return EchoSettings(
            min_source_port=self["min-source-port"],
            per_peer=Rates(self["peer-rate"], self["peer-bytes"], self["burst"]),
            total=Rates(self["total-rate"], self["total-bytes"], self["burst"]),
            max_peers=self["max-peers"],
            log_interval=self["log-interval"],
        )


def _build(options: usage.Options, context: Context) -> UDPEcho:
    """A :class:`UDPEcho` timed by the server's reactor."""
    assert isinstance(options, UDPEchoOptions)
    return UDPEcho(context.reactor, options.settings())


udp_echo = Behaviour(
    "udp-echo",
    "returns each datagram to its sender (loop-proof, rate-limited)",
    "udp:7777",
    UDPEchoOptions,
    _build,
    datagram=True,
)
