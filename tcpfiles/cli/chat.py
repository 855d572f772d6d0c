"""``tcpfiles chat``: thin over :class:`tcpfiles.chat.client.ChatSession`."""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet import defer

from tcpfiles.chat.client import ChatSession
from tcpfiles.cli.common import DEFAULT_CHAT, standard_io
from tcpfiles.cli.options import add_server_options, endpoint_for


def add_commands(commands: Any) -> None:
    """``chat``, with its options."""
    chat = commands.add_parser(
        "chat",
        help="join a chat room",
        description="Chat: lines you type go to the room, the room's lines are printed. "
        "Reconnects by itself if the server goes away. End with /quit or end of input.",
    )
    add_server_options(chat, DEFAULT_CHAT)
    chat.add_argument("--nick", "-n", help="your nickname (else choose one with /nick NAME)")
    chat.set_defaults(handler=run_chat)


@defer.inlineCallbacks
def run_chat(reactor: Any, args: argparse.Namespace) -> Any:
    """``tcpfiles chat``: until /quit or the end of input."""
    endpoint = endpoint_for(reactor, args, args.server, 9000)  # Failed for a bad --server
    session = ChatSession(reactor, endpoint, args.server, args.nick)
    session.login = args.credentials
    return (yield session.start(standard_io))
