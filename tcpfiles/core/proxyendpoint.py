"""``haproxy:`` listeners: the endpoint strings and the command line's PROXY settings.

``haproxy:KIND:…`` (KIND one of tcp, tcp6, ssl, unix, systemd) listens as ``KIND:…`` would,
with :class:`~tcpfiles.core.proxy.ProxyFactory` outermost: for ``ssl`` the PROXY header comes
first, in the clear, then TLS (what HAProxy's ``send-proxy-v2`` sends, with or without ``ssl``
on its server line).  Twisted's own ``haproxy:`` parser (the header inside TLS, any peer
trusted, no deadline) is not used.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import endpoints, interfaces
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage

from tcpfiles.core.options import positive_float
from tcpfiles.core.proxy import (
    DEFAULT_PROXY_FROM,
    DEFAULT_SETTINGS,
    ProxyFactory,
    ProxySettings,
    parse_networks,
)

__all__ = ["ProxyOptions", "is_proxy_endpoint", "proxy_endpoint"]

#: Endpoint kinds a ``haproxy:`` listener may wrap.
_INNER_KINDS = ("tcp", "tcp6", "ssl", "unix", "systemd")


class _ProxyReactor:
    """The reactor, for an inner endpoint of a ``haproxy:`` listener: whatever it listens
    with reads a PROXY header first (for ``ssl``: before TLS)."""

    def __init__(self, reactor: Any, settings: ProxySettings) -> None:
        self._reactor = reactor
        self._settings = settings

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _wrap(self, factory: Any) -> ProxyFactory:
        return ProxyFactory(factory, self._reactor, self._settings)

    def listenTCP(self, port: int, factory: Any, **options: Any) -> Any:  # noqa: N802
        return self._reactor.listenTCP(port, self._wrap(factory), **options)

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, **options: Any) -> Any:  # noqa: N802, N803
        tls = TLSMemoryBIOFactory(contextFactory, False, factory)  # the header first, then TLS
        return self._reactor.listenTCP(port, self._wrap(tls), **options)

    def listenUNIX(self, path: Any, factory: Any, **options: Any) -> Any:  # noqa: N802
        return self._reactor.listenUNIX(path, self._wrap(factory), **options)

    def adoptStreamPort(self, fd: int, family: Any, factory: Any) -> Any:  # noqa: N802
        return self._reactor.adoptStreamPort(fd, family, self._wrap(factory))


def is_proxy_endpoint(description: str) -> bool:
    """Whether ``description`` is a ``haproxy:`` endpoint string."""
    return description.split(":", 1)[0].lower() == "haproxy"


def proxy_endpoint(
    reactor: Any, description: str, settings: ProxySettings = DEFAULT_SETTINGS
) -> interfaces.IStreamServerEndpoint:
    """The server endpoint for ``description``: a ``haproxy:KIND:…`` one reads a PROXY header
    (trusted from ``settings.allowed`` only), then serves the ``KIND:…`` endpoint's
    connections (``ssl``: TLS after the header); anything else as Twisted parses it.
    ValueError for a ``KIND`` other than tcp, tcp6, ssl, unix, systemd."""
    endpoint: interfaces.IStreamServerEndpoint
    if not is_proxy_endpoint(description):
        endpoint = endpoints.serverFromString(reactor, description)
        return endpoint
    inner = description.split(":", 1)[1]
    kind = inner.split(":", 1)[0].lower()
    if kind not in _INNER_KINDS:
        raise ValueError(f"haproxy:{kind}: is not supported (use {', '.join(_INNER_KINDS)})")
    endpoint = endpoints.serverFromString(_ProxyReactor(reactor, settings), inner)
    return endpoint


class ProxyOptions(usage.Options):
    """The command line's PROXY protocol settings, for ``haproxy:`` listeners."""

    optParameters: list[list[Any]] = [
        [
            "proxy-from",
            None,
            DEFAULT_PROXY_FROM,
            "Balancers trusted to send PROXY headers on haproxy: listeners: addresses or "
            "networks, comma-separated, or none; other peers there are closed.",
        ],
        [
            "proxy-timeout",
            None,
            5.0,
            "Seconds a connection on a haproxy: listener has to send its whole PROXY header.",
            positive_float,
        ],
    ]

    def check_proxy(self) -> None:
        """UsageError unless ``--proxy-from`` parses."""
        try:
            parse_networks(self["proxy-from"])
        except ValueError as exc:
            raise usage.UsageError(f"--proxy-from: {exc}") from None

    def proxy_settings(self) -> ProxySettings:
        """The settings given."""
        return ProxySettings(parse_networks(self["proxy-from"]), float(self["proxy-timeout"]))
