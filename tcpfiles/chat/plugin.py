"""The chat behaviour as a plugin: its options, and how it is built."""

from __future__ import annotations

import importlib.util

from twisted.python import usage

from tcpfiles.chat.bus import RoomBus, parse_url
from tcpfiles.chat.protocol import ChatFactory
from tcpfiles.core.options import positive_float, positive_int
from tcpfiles.core.plugin import Behaviour, Context

__all__ = ["ChatOptions", "chat"]


class ChatOptions(usage.Options):
    """Options of ``chat``."""

    optParameters = [
        ["history", None, 20, "Messages replayed to a newcomer.", int],
        ["max-line", None, 4096, "Longest line, in bytes.", positive_int],
        [
            "max-queue",
            None,
            1 << 20,
            "Bytes of unread output a user may pile up before being dropped.",
            positive_int,
        ],
        ["rate", None, 5.0, "Lines a second a user may send, on average.", positive_float],
        ["burst", None, 20.0, "Lines a user may send at once.", positive_float],
        ["idle-timeout", None, 3600.0, "Seconds a user may stay silent.", positive_float],
        ["max-per-peer", None, 64, "Connections from one address at once.", positive_int],
        ["max-connections", None, 1024, "Connections in total at once.", positive_int],
        [
            "bus",
            None,
            None,
            "One room across processes and hosts: redis://HOST[:PORT][/DB] "
            "(needs the redis extra: pip install 'tcpfiles[redis]').",
        ],
        ["bus-prefix", None, "tcpfiles:chat", "Prefix of the room's Redis keys and channel."],
    ]

    def postOptions(self) -> None:
        """History cannot be negative; a bus must be a Redis URL, and its client installed."""
        if self["history"] < 0:
            raise usage.UsageError("--history must be 0 or more")
        if self["bus"]:
            try:
                parse_url(self["bus"])
            except ValueError as exc:
                raise usage.UsageError(f"--bus {exc}") from None
            if importlib.util.find_spec("txredisapi") is None:
                raise usage.UsageError(
                    "--bus needs the txredisapi package: pip install 'tcpfiles[redis]'"
                )


def _build(options: usage.Options, context: Context) -> ChatFactory:
    factory = ChatFactory(context.reactor, options, context.portal, context.limiter)
    room, metrics = factory.room, context.metrics
    metrics.collect("tcpfiles_chat_users", "Users in the chat room.", lambda: len(room.members))
    metrics.collect(
        "tcpfiles_chat_messages_total",
        "Chat messages sent (to everyone, or to one with /msg).",
        lambda: room.messages,
        kind="counter",
    )
    if options["bus"]:
        from tcpfiles.chat.redisbus import RedisBus  # the redis extra: only when asked for

        prefix = options["bus-prefix"]
        bus = RedisBus(context.reactor, options["bus"], f"{prefix}:room")
        factory.relay = RoomBus(
            factory.room, bus, context.reactor, prefix=prefix, history=options["history"]
        )
    return factory


chat = Behaviour(
    "chat",
    "a line chat room: /nick, /who, /msg, /me, /quit; history for newcomers",
    "tcp:9000",
    ChatOptions,
    _build,
    logs_in=True,
)
