"""The metrics page: ``/metrics`` (Prometheus's text format) and ``/status`` (JSON) from a small
``twisted.web`` resource on the reactor it is given: no WSGI, no thread pool
(``prometheus_client.twisted`` would import the global reactor and answer in a thread), served
behind the kernel's guard like every listener, and said aloud when it is not on loopback.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry
from twisted.logger import Logger
from twisted.web import resource, server

from tcpfiles.core.guard import ConnectionSettings, guard_stream
from tcpfiles.core.service import ListenerService

__all__ = ["PAGE_LIMITS", "MetricsSite", "PageService", "metrics_site"]

log = Logger(namespace="tcpfiles.metrics")


class _Text(resource.Resource):
    isLeaf = True

    def __init__(self, content_type: str, render: Callable[[], bytes]) -> None:
        super().__init__()
        self.content_type = content_type.encode("ascii")
        self.make = render

    def render_GET(self, request: Any) -> bytes:  # noqa: N802 - twisted.web's name
        request.setHeader(b"content-type", self.content_type)
        return self.make()


class MetricsSite(server.Site):
    """No access log line per scrape, no "Starting factory" line."""

    noisy = False

    def log(self, request: Any) -> None:
        """Scrapes are not logged."""

    def logPrefix(self) -> str:  # noqa: N802 - Twisted's name
        return "MetricsSite"


def metrics_site(
    registry: CollectorRegistry,
    status: Callable[[], dict[str, Any]] | None = None,
    reactor: Any = None,
) -> server.Site:
    """A twisted.web site: ``/metrics`` for ``registry`` and, given ``status``, ``/status``;
    ``reactor`` times its connections out (twisted.web takes the global one without it)."""
    root = resource.Resource()
    root.putChild(
        b"metrics",
        _Text(
            prometheus_client.CONTENT_TYPE_LATEST,
            lambda: prometheus_client.generate_latest(registry),
        ),
    )
    if status is not None:
        root.putChild(
            b"status",
            _Text("application/json", lambda: json.dumps(status(), indent=1).encode() + b"\n"),
        )
    return MetricsSite(root, reactor=reactor)


#: The page's own connection limits, kept by the kernel's guard as for every behaviour: a
#: scraper and a few people at once, never a crowd.
PAGE_LIMITS = ConnectionSettings(idle_timeout=30.0, max_per_peer=8, max_connections=32)


class PageService(ListenerService):
    """Serves ``site`` (a metrics page) on ``description`` while running, behind the kernel's
    guard (:data:`PAGE_LIMITS`, its tracker added to ``trackers``, drained on stop and counted
    by the descriptor check); logs ``metrics listening on ...`` as the behaviours' listeners
    do, and warns when that is not loopback: the page has no login, and ``/status`` names
    every client and what it transfers."""

    def __init__(
        self,
        description: str,
        site: server.Site,
        reactor: Any,
        trackers: list[Any] | None = None,
    ) -> None:
        guarded = guard_stream(site, PAGE_LIMITS, reactor, [] if trackers is None else trackers)
        super().__init__(description, guarded, reactor, "metrics")

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        host = getattr(self.port.getHost(), "host", None) if self.port is not None else None
        if host is not None and not _loopback(host):
            log.warn(
                "metrics listening on {address}, not loopback: the page has no login and "
                "/status shows every client and what it transfers; keep it to the operator's "
                "network (interface=)",
                address=self.address(),
            )


def _loopback(host: str) -> bool:
    """Whether ``host`` (an address a port is bound to) is this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
