"""Where a files client connects: ``HOST[:PORT]``, ``[IPv6]:PORT`` or an endpoint string."""

from __future__ import annotations

from typing import Any

from twisted.internet import endpoints, interfaces

from tcpfiles.core.tls import client_tls_endpoint, parse_tls_server

__all__ = ["DEFAULT_PORT", "client_endpoint"]

DEFAULT_PORT = 8888
_ENDPOINT_KINDS = ("tcp:", "tcp6:", "tls:", "ssl:", "unix:")


def client_endpoint(
    reactor: Any,
    server: str,
    default_port: int = DEFAULT_PORT,
    ca: str | None = None,
    insecure: bool = False,
) -> interfaces.IStreamClientEndpoint:
    """An endpoint for ``HOST``, ``HOST:PORT``, ``[IPv6]:PORT`` or a client endpoint string.

    ``tls:host=H:port=P`` verifies the server against the platform's trust store; ``ca`` (a PEM
    file) trusts that authority instead, and turns a plain ``HOST:PORT`` into TLS too;
    ``insecure`` makes TLS connections without any verification.
    """
    if not server.strip():
        raise ValueError("the server is empty: give HOST[:PORT] or an endpoint string")
    is_tls = server.startswith("tls:")
    if server.startswith(_ENDPOINT_KINDS) and not is_tls:
        if ca or insecure:
            raise ValueError("--ca and --insecure go with a tls: server or HOST:PORT")
        return _from_string(reactor, server)
    if is_tls and not (ca or insecure):
        return _from_string(reactor, server)
    host, port = parse_tls_server(server) if is_tls else _host_port(server, default_port)
    if not host:
        raise ValueError(f"no host in {server!r}")
    if ca or insecure:
        return client_tls_endpoint(reactor, host, port, ca, insecure)
    endpoint: interfaces.IStreamClientEndpoint = endpoints.HostnameEndpoint(
        reactor, host, port, timeout=10
    )
    return endpoint


def _from_string(reactor: Any, server: str) -> interfaces.IStreamClientEndpoint:
    """``clientFromString``, with every malformed string a ValueError (a missing ``port=`` is a
    TypeError inside Twisted)."""
    try:
        endpoint: interfaces.IStreamClientEndpoint = endpoints.clientFromString(reactor, server)
        return endpoint
    except (TypeError, KeyError, IndexError) as exc:
        missing = "port" if "port" in str(exc) else "a required argument"
        raise ValueError(f"bad endpoint string {server!r}: missing {missing}") from None


def _host_port(server: str, default_port: int) -> tuple[str, int]:
    host, port = server, default_port
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], server)
    elif server.count(":") == 1:
        host, _, port_text = server.partition(":")
        port = _port(port_text, server)
    return host, port


def _port(text: str, server: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in {server!r}")
    return int(text)
