"""The oneshot behaviour as a plugin: its options, and how it is built."""

from __future__ import annotations

from twisted.python import usage

from tcpfiles.core.options import positive_float
from tcpfiles.core.plugin import Behaviour, ConnectionOptions, Context
from tcpfiles.oneshot.protocol import DEFAULT_PORT, OneShotFactory
from tcpfiles.tree.store import FileStore

__all__ = ["OneShotOptions", "oneshot"]


class OneShotOptions(ConnectionOptions):
    """Options of ``oneshot``."""

    optParameters = [
        [
            "quiet",
            None,
            0.5,
            "Seconds of silence that end a name sent without a newline.",
            positive_float,
        ],
        [
            "name-timeout",
            None,
            30.0,
            "Seconds from the connection within which the whole name must arrive.",
            positive_float,
        ],
        ["stall-timeout", None, 60.0, "Seconds a transfer may make no progress.", positive_float],
    ]


def _build(options: usage.Options, context: Context) -> OneShotFactory:
    """Serve ``context.root`` read-only; with none (--auth without --anonymous), nothing."""
    store = None if context.root is None else FileStore(context.root)
    return OneShotFactory(store, context.reactor, options)


oneshot = Behaviour(
    "oneshot",
    "the tutorial's one-shot downloader protocol (name in, bytes out)",
    f"tcp:{DEFAULT_PORT}",
    OneShotOptions,
    _build,
    uses_root=True,
)
