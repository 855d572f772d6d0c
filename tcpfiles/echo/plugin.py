"""The echo and upper behaviours as plugins: their options, and how they are built."""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from tcpfiles.core.plugin import Behaviour, ConnectionOptions, Context
from tcpfiles.echo.protocol import EchoFactory, EchoProtocol, UpperProtocol

__all__ = ["EchoOptions", "echo", "upper"]


class EchoOptions(ConnectionOptions):
    """Options of ``echo`` and ``upper``."""


def _builder(protocol: type[EchoProtocol]) -> Any:
    def build(options: usage.Options, context: Context) -> EchoFactory:
        return EchoFactory(protocol)

    return build


echo = Behaviour(
    "echo",
    "returns every byte unchanged (RFC 862), with backpressure",
    "tcp:7777",
    EchoOptions,
    _builder(EchoProtocol),
)


upper = Behaviour(
    "upper",
    "echo that upper-cases ASCII, like the socket tutorial's server",
    "tcp:7778",
    EchoOptions,
    _builder(UpperProtocol),
)
