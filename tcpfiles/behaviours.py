"""Finding behaviours, and what they are given when built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.plugin import IPlugin, getPlugins
from twisted.python import usage
from zope.interface import implementer

from tcpfiles.files.paths import Root
from tcpfiles.interfaces import IBehaviour
from tcpfiles.options import positive_float, positive_int


@dataclass(frozen=True)
class Context:
    """What a behaviour may use: the reactor (clock, threads) and the served root."""

    reactor: Any
    root: Root | None
    #: twisted.cred portal when the server has accounts (--auth): log users in with it
    portal: Any = None
    #: tcpfiles.files.accounts.LoginLimiter shared by every behaviour, for failed logins per address
    limiter: Any = None


def discover() -> dict[str, Any]:
    """Every behaviour found, by name (built-ins and third-party alike)."""
    import tcpfiles.plugins

    found: dict[str, Any] = {}
    for behaviour in getPlugins(IBehaviour, tcpfiles.plugins):
        found.setdefault(behaviour.name, behaviour)
    return dict(sorted(found.items()))


@implementer(IPlugin, IBehaviour)
class Behaviour:
    """A ready-made :class:`IBehaviour`: give it the parts, export an instance from a plugin."""

    def __init__(
        self,
        name: str,
        summary: str,
        default_endpoint: str,
        options: type[usage.Options],
        build: Callable[[usage.Options, Context], Any],
    ) -> None:
        self.name = name
        self.summary = summary
        self.default_endpoint = default_endpoint
        self.options = options
        self._build = build

    def build(self, options: usage.Options, context: Context) -> Any:
        """Make the factory (or datagram protocol) from parsed options."""
        return self._build(options, context)

    def __repr__(self) -> str:
        return f"<Behaviour {self.name} on {self.default_endpoint}>"


class ConnectionOptions(usage.Options):
    """Settings every stream behaviour has: connection limits and an idle timeout."""

    optParameters = [
        ["idle-timeout", None, 300.0, "Seconds a connection may stay silent.", positive_float],
        ["max-per-peer", None, 64, "Connections from one address at once.", positive_int],
        ["max-connections", None, 1024, "Connections in total at once.", positive_int],
    ]
