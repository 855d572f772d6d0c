"""TLS for tcpfiles: server endpoint shortcuts and verified client endpoints.

Servers: any Twisted ``ssl:`` endpoint string works everywhere an endpoint is taken;
:func:`server_endpoint` turns a default ``tcp:PORT`` into ``ssl:PORT`` with a certificate and key,
for ``--tls-cert``/``--tls-key``.  Clients: :func:`client_tls_endpoint` always verifies the
certificate and the host name, against the platform's trust store or one CA file (``--ca``); only
``insecure=True`` (``--insecure``) connects without verification.  Both sides refuse anything
older than TLS 1.2 (Twisted's default minimum, made explicit here).
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import endpoints, interfaces
from twisted.python import usage

from tcpfiles.core.service import check_server_string

__all__ = [
    "TLSOptions",
    "can_half_close",
    "check_pair",
    "client_tls_endpoint",
    "explain",
    "is_tls_transport",
    "parse_tls_server",
    "quote",
    "server_endpoint",
]


def quote(value: str) -> str:
    """Escape a value for a Twisted endpoint string (colons, equals signs, backslashes)."""
    quoted: str = endpoints.quoteStringArgument(value)
    return quoted


def server_endpoint(description: str, cert: str, key: str) -> str:
    """``tcp:PORT[:...]`` -> ``ssl:PORT[:...]:certKey=CERT:privateKey=KEY``; others unchanged."""
    kind, _, rest = description.partition(":")
    if kind.lower() != "tcp":
        return description
    return f"ssl:{rest}:certKey={quote(cert)}:privateKey={quote(key)}"


def check_pair(cert: str, key: str) -> None:
    """Load the PEM ``cert`` (chain) and ``key`` and check that they go together, opening
    nothing; raise what Twisted and OpenSSL raise when they cannot be read or do not match."""
    check_server_string(server_endpoint("tcp:0", cert, key))


class TLSOptions(usage.Options):
    """The TLS shortcut of a server's command line: every default endpoint becomes TLS."""

    optParameters: list[list[Any]] = [
        [
            "tls-cert",
            None,
            None,
            "PEM certificate (chain): the default endpoints become TLS (ssl:) ones.",
        ],
        ["tls-key", None, None, "PEM private key that goes with --tls-cert."],
    ]

    def check_tls(self) -> None:
        """UsageError unless both or neither are given, readable, and matching."""
        if bool(self["tls-cert"]) != bool(self["tls-key"]):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        for option in ("tls-cert", "tls-key"):
            if self[option] and not os.access(self[option], os.R_OK):
                raise usage.UsageError(f"--{option} {self[option]!r}: cannot read it")
        if self["tls-cert"]:
            try:  # loads and matches the certificate and the key now, before anything starts
                check_pair(self["tls-cert"], self["tls-key"])
            except Exception as exc:  # noqa: BLE001 - OpenSSL errors of every kind
                raise usage.UsageError(f"--tls-cert/--tls-key: {exc}") from None

    def tls(self) -> tuple[str, str] | None:
        """The (certificate, key) pair given, or None."""
        return (self["tls-cert"], self["tls-key"]) if self["tls-cert"] else None


def _split_endpoint_args(text: str) -> dict[str, str]:
    """``host=a:port=1`` (with ``\\:`` escapes) -> ``{"host": "a", "port": "1"}``."""
    values: dict[str, str] = {}
    current, escaped = "", False
    parts = []
    for ch in text:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"expected key=value in the tls: endpoint, got {part!r}")
        values[key] = value
    return values


def client_tls_endpoint(
    reactor: Any,
    host: str,
    port: int,
    ca: str | None = None,
    insecure: bool = False,
    timeout: float = 10,
) -> interfaces.IStreamClientEndpoint:
    """A TLS client endpoint that checks the server's certificate and host name.

    ``ca``: a PEM file of the certificate authority to trust instead of the platform's roots.
    ``insecure``: no verification at all (the caller must have been asked for it explicitly).
    """
    from twisted.internet import ssl
    from twisted.internet.ssl import TLSVersion

    if insecure:
        options: Any = ssl.CertificateOptions(raiseMinimumTo=TLSVersion.TLSv1_2)
    else:
        trust = None
        if ca is not None:
            with open(ca, "rb") as pem:
                trust = ssl.Certificate.loadPEM(pem.read())
        options = ssl.optionsForClientTLS(
            host, trustRoot=trust, extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_2}
        )
    inner = endpoints.HostnameEndpoint(reactor, host.encode("idna"), port, timeout=timeout)
    return endpoints.wrapClientTLS(options, inner)


def parse_tls_server(server: str) -> tuple[str, int]:
    """The host and port of ``tls:host=H:port=P`` (or ``tls:H:P``)."""
    rest = server.split(":", 1)[1]
    if "=" not in rest:
        host, _, port = rest.rpartition(":")
        return host.strip("[]"), int(port)
    values = _split_endpoint_args(rest)
    unknown = set(values) - {"host", "port", "timeout"}
    if unknown:
        raise ValueError(f"unsupported tls: endpoint arguments with --ca/--insecure: {unknown}")
    return values["host"], int(values.get("port", "8888"))


def explain(reason: str) -> str:
    """A TLS failure as a sentence for the user."""
    text = reason.lower()
    if "certificate verify failed" in text or "self-signed" in text or "self signed" in text:
        return (
            "TLS: the server's certificate is not trusted (self-signed, or from an unknown "
            "authority); give its CA with --ca FILE"
        )
    if "verificationerror" in text or "does not match" in text or "hostname" in text:
        return "TLS: the server's certificate is not for this host name"
    if "wrong version number" in text or "packet length too long" in text:
        return (
            "TLS: the server answered in plain text: it is not a TLS server (use HOST:PORT "
            "without tls: and --ca)"
        )
    if "version" in text or "protocol" in text:
        return "TLS: no common protocol version (TLS 1.2 or newer is required)"
    return reason


def is_tls_transport(transport: Any) -> bool:
    """Whether ``transport`` carries TLS.

    Not ``hasattr``: the TLS wrapper forwards unknown attributes to the TCP transport beneath it,
    so a ``loseWriteConnection`` found on it would half-close the raw socket under the TLS stream.
    """
    return interfaces.INegotiated.providedBy(transport) or bool(getattr(transport, "TLS", False))


def can_half_close(transport: Any) -> bool:
    """Whether ``loseWriteConnection`` is safe: a plain TCP (or UNIX) transport."""
    return not is_tls_transport(transport) and hasattr(transport, "loseWriteConnection")
