"""``twistd tcpfiles``: command-line options, and the service they describe.

This module only translates options into arguments for the library classes; it opens nothing
until twistd starts the service.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import endpoints
from twisted.python import usage

from tcpfiles.files.factory import make_files_service
from tcpfiles.files.paths import Root
from tcpfiles.files.server import Limits

DEFAULT_LISTEN = "tcp:8888"


def _positive(kind: type) -> Any:
    def coerce(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise ValueError(f"must be positive, got {text}")
        return value

    coerce.coerceDoc = f"A positive {'number' if kind is float else 'whole number'}."  # type: ignore[attr-defined]
    return coerce


class Options(usage.Options):
    """Options of ``twistd tcpfiles``."""

    synopsis = "--root DIR [--listen ENDPOINT]... [options]"
    longdesc = (
        "Serve the files below DIR with the tcpfiles protocol (docs/protocol.md). "
        "Listens on tcp:8888 unless --listen says otherwise. On SIGTERM or SIGINT the "
        "listeners close first and transfers in flight get --grace seconds to finish; "
        "a second signal stops at once."
    )
    optParameters = [
        ["root", "r", None, "Directory to serve (required)."],
        [
            "grace",
            None,
            30.0,
            "Seconds that transfers may take to finish on shutdown.",
            _positive(float),
        ],
        ["max-line", None, Limits.max_line, "Longest request line, in bytes.", _positive(int)],
        [
            "line-timeout",
            None,
            Limits.line_timeout,
            "Seconds a request line may take to arrive, from its first byte.",
            _positive(float),
        ],
        [
            "idle-timeout",
            None,
            Limits.idle_timeout,
            "Seconds a connection may sit idle between requests.",
            _positive(float),
        ],
        [
            "stall-timeout",
            None,
            Limits.stall_timeout,
            "Seconds a transfer may make no progress before it is dropped.",
            _positive(float),
        ],
        [
            "max-per-peer",
            None,
            Limits.max_per_peer,
            "Connections allowed from one address at once.",
            _positive(int),
        ],
        [
            "max-connections",
            None,
            Limits.max_connections,
            "Connections allowed in total at once.",
            _positive(int),
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """Twisted server endpoint string to serve files on; repeatable [default: tcp:8888]."""
        try:
            from twisted.internet import reactor

            endpoints.serverFromString(reactor, description)
        except (ValueError, TypeError, KeyError) as exc:
            raise usage.UsageError(f"--listen {description!r}: {exc}") from None
        self["listen"].append(description)

    opt_l = opt_listen

    def postOptions(self) -> None:
        """Check the root before anything listens."""
        if self["root"] is None:
            raise usage.UsageError("--root DIR is required (the directory to serve)")
        try:
            self["root"] = Root.at(self["root"])
        except NotADirectoryError:
            raise usage.UsageError(
                f"--root {self['root']!r} does not exist or is not a directory"
            ) from None
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]

    def limits(self) -> Limits:
        """The limits these options ask for."""
        return Limits(
            max_line=self["max-line"],
            line_timeout=self["line-timeout"],
            idle_timeout=self["idle-timeout"],
            stall_timeout=self["stall-timeout"],
            max_per_peer=self["max-per-peer"],
            max_connections=self["max-connections"],
        )


def makeService(options: Options, reactor: Any = None) -> service.IService:
    """The service twistd runs: files on every ``--listen`` endpoint, drained on stop."""
    if reactor is None:
        from twisted.internet import reactor
    return make_files_service(
        options["root"],
        options["listen"],
        reactor,
        limits=options.limits(),
        grace=options["grace"],
        second_signal_forces=True,
    )
