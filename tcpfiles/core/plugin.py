"""Finding behaviours, and what they are given when built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from twisted.application import service
from twisted.logger import Logger
from twisted.plugin import IPlugin, getPlugins
from twisted.python import usage
from zope.interface import implementer

from tcpfiles.core.interfaces import IBehaviour
from tcpfiles.core.metrics import NO_METRICS, Metrics
from tcpfiles.core.options import positive_float, positive_int

__all__ = [
    "Behaviour",
    "ConnectionOptions",
    "Context",
    "StartWarning",
    "blind_warning",
    "context_for",
    "discover",
    "is_datagram",
]

log = Logger(namespace="tcpfiles.core.plugin")


@dataclass(frozen=True)
class Context:
    """What a behaviour may use: the reactor (clock, threads) and the files it may serve.

    Under ``--auth``, a behaviour that does not log users in (``logs_in`` false) is handed only
    what an anonymous user may see: see :func:`context_for`.
    """

    reactor: Any
    #: the files the behaviour may serve (a tcpfiles.tree.paths.Root), or None: none at all
    #: (it must still start and refuse)
    root: Any
    #: twisted.cred portal when the server has accounts (--auth): log users in with it
    portal: Any = None
    #: tcpfiles.core.auth.LoginLimiter shared by every behaviour, for failed logins per address
    limiter: Any = None
    #: whether the behaviour may write below ``root`` (--writable; never for the anonymous view)
    writable: bool = False
    #: the accounts' realm (a tcpfiles.tree.accounts.FilesRealm): the one store and upload
    #: registry of each root, shared by every behaviour; None when the server has none
    realm: Any = None
    #: where to report metrics (tcpfiles.core.metrics): records nothing without --metrics
    metrics: Metrics = NO_METRICS


def context_for(behaviour: Any, server: Context, anonymous_root: Any) -> Context:
    """The context ``behaviour`` is built with, from the whole server's.

    Without accounts, or for a behaviour that logs users in (and then serves each one what
    its account allows), that is ``server`` itself.  Under ``--auth`` a behaviour that does not
    log users in gets only the anonymous view: ``anonymous_root``, read-only.  That is the root
    an anonymous login through the portal reaches (``--anonymous``), or None: no root at all;
    the caller computes it (:func:`tcpfiles.tree.accounts.anonymous_root`), as the kernel
    knows no file tree.
    """
    if server.portal is None or getattr(behaviour, "logs_in", False):
        return server
    return replace(server, root=anonymous_root, writable=False)


def blind_warning(behaviour: Any, server: Context, given: Context) -> str | None:
    """Why ``behaviour``, which serves files, was given none; None when it was not."""
    if given.root is not None or server.root is None or not getattr(behaviour, "uses_root", False):
        return None
    return (
        f"{behaviour.name} does not log users in, so under --auth it sees only what an "
        "anonymous user may see; without --anonymous that is nothing: it serves no files "
        "(--anonymous would let it serve the anonymous view, read-only)"
    )


def discover() -> dict[str, Any]:
    """Every behaviour found, by name (built-ins and third-party alike)."""
    import tcpfiles.plugins

    found: dict[str, Any] = {}
    for behaviour in getPlugins(IBehaviour, tcpfiles.plugins):
        found.setdefault(behaviour.name, behaviour)
    return dict(sorted(found.items()))


def is_datagram(behaviour: Any) -> bool:
    """Whether ``behaviour`` serves datagrams (a ``DatagramProtocol`` per ``udp:`` endpoint)
    rather than streams: what its ``datagram`` attribute says, else whether its default endpoint
    is a ``udp:`` one."""
    declared = getattr(behaviour, "datagram", None)
    if declared is not None:
        return bool(declared)
    default = str(getattr(behaviour, "default_endpoint", ""))
    return default.partition(":")[0].lower() == "udp"


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
        *,
        logs_in: bool = False,
        uses_root: bool = False,
        datagram: bool | None = None,
    ) -> None:
        self.name = name
        self.summary = summary
        self.default_endpoint = default_endpoint
        self.options = options
        self.logs_in = logs_in
        self.uses_root = uses_root
        self.datagram = is_datagram(self) if datagram is None else datagram
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


class StartWarning(service.Service):
    """Logs one warning when the server starts (not when its options are parsed)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def startService(self) -> None:
        """Say it."""
        super().startService()  # type: ignore[no-untyped-call]
        log.warn("{text}", text=self.text)
