"""``tcpfiles chat``: thin over :class:`tcpfiles.chat.client.ChatSession`."""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet import defer

from tcpfiles.chat.client import ChatSession
from tcpfiles.cli.common import connection_failed, standard_io
from tcpfiles.cli.options import endpoint_for


@defer.inlineCallbacks
def run_chat(reactor: Any, args: argparse.Namespace) -> Any:
    """``tcpfiles chat``: until /quit or the end of input."""
    try:
        endpoint = endpoint_for(reactor, args, args.server, 9000)
    except ValueError as exc:
        raise connection_failed(args.server, exc) from None
    session = ChatSession(reactor, endpoint, args.server, args.nick)
    session.login = args.credentials
    return (yield session.start(standard_io))
