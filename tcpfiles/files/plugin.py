"""The files behaviour as a plugin: its options, and how it is built."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from tcpfiles.core.options import byte_rate, positive_float, positive_int
from tcpfiles.core.plugin import Behaviour, Context
from tcpfiles.files.factory import factory_for
from tcpfiles.files.server import FileServerFactory, Limits

__all__ = ["FilesOptions", "files", "limits_of"]


class FilesOptions(usage.Options):
    """Options of ``files``: the bounds of its connections and requests."""

    optParameters: list[list[Any]] = [
        ["max-line", None, Limits.max_line, "Longest request line, in bytes.", positive_int],
        [
            "line-timeout",
            None,
            Limits.line_timeout,
            "Seconds a request line may take to arrive, from its first byte.",
            positive_float,
        ],
        [
            "idle-timeout",
            None,
            Limits.idle_timeout,
            "Seconds a connection may sit idle between requests.",
            positive_float,
        ],
        [
            "stall-timeout",
            None,
            Limits.stall_timeout,
            "Seconds a transfer may make no progress before it is dropped.",
            positive_float,
        ],
        [
            "max-per-peer",
            None,
            Limits.max_per_peer,
            "Connections allowed from one address at once.",
            positive_int,
        ],
        [
            "max-connections",
            None,
            Limits.max_connections,
            "Connections allowed in total at once.",
            positive_int,
        ],
        [
            "max-list",
            None,
            Limits.max_list,
            "Most entries one LIST answers; a longer listing ends with 'END <n> truncated'.",
            positive_int,
        ],
        [
            "rate",
            None,
            0,
            "Bytes per second each connection may download or upload (an account's rate= in "
            "--users applies as well).",
            byte_rate,
        ],
    ]
    optFlags: list[list[Any]] = [
        ["no-sendfile", None, "Copy file bodies through Python instead of os.sendfile."],
    ]

    def limits(self) -> Limits:
        """The limits these options ask for."""
        return limits_of(self)


def limits_of(options: Mapping[str, Any]) -> Limits:
    """The :class:`Limits` that parsed files options ask for."""
    return Limits(
        max_line=options["max-line"],
        line_timeout=options["line-timeout"],
        idle_timeout=options["idle-timeout"],
        stall_timeout=options["stall-timeout"],
        max_per_peer=options["max-per-peer"],
        max_connections=options["max-connections"],
        zero_copy=not options["no-sendfile"],
        max_list=options["max-list"],
        rate=options.get("rate") or 0,
    )


def _build(options: usage.Options, context: Context) -> FileServerFactory:
    """Serve ``context.root`` through the server's accounts, within the options' limits."""
    return factory_for(context, limits_of(options))


files = Behaviour(
    "files",
    "the file service: GET, RESUME, LIST, STAT (sha256), PUT with --writable",
    "tcp:8888",
    FilesOptions,
    _build,
    logs_in=True,
    uses_root=True,
)
