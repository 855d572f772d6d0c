"""``tcpfiles echo``: thin over :func:`tcpfiles.echo.client.run_echo_client`."""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet import defer

from tcpfiles.cli.common import DEFAULT_ECHO, EXIT_OK, connection_failed, standard_io
from tcpfiles.cli.options import add_server_options, endpoint_for
from tcpfiles.echo.client import run_echo_client


def add_commands(commands: Any) -> None:
    """``echo``, with its options."""
    echo = commands.add_parser(
        "echo",
        help="send stdin to an echo server, print what comes back",
        description="Send standard input to an echo (or upper) server and print the answer.",
    )
    add_server_options(echo, DEFAULT_ECHO)
    echo.set_defaults(handler=run_echo)


@defer.inlineCallbacks
def run_echo(reactor: Any, args: argparse.Namespace) -> Any:
    """``tcpfiles echo``: stdin to the server, the answer to stdout."""
    try:
        yield run_echo_client(endpoint_for(reactor, args, args.server, 7777), standard_io)
    except Exception as exc:
        raise connection_failed(args.server, exc) from None
    return EXIT_OK
