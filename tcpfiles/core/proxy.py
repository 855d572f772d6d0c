"""Behind a load balancer: the PROXY protocol layer, below TLS and the guard.

A ``haproxy:`` listener (``haproxy:tcp:8888``, ``haproxy:ssl:8443:certKey=…``) is built by
:mod:`tcpfiles.core.proxyendpoint`, not by Twisted's own ``haproxy:`` parser: each connection
first meets a :class:`ProxyProtocol`, which

- closes it at once (logged) unless it comes from an allowed balancer (:class:`ProxySettings`,
  ``--proxy-from``; loopback by default);
- buffers what it sends until a whole PROXY header (version 1 or 2) has arrived, within
  ``deadline`` seconds (``--proxy-timeout``) and :mod:`~tcpfiles.core.proxyheader`'s size
  bounds, else closes it (logged);
- then builds what it wraps with the client's real address (TLS for ``haproxy:ssl:``, then
  the kernel's guard, then the behaviour): so the per-peer limits, the login limiter, the logs
  and every behaviour's ``transport.getPeer()`` see the client, not the balancer; and hands
  on the bytes that followed the header.

The header comes first, in the clear, then TLS if any: what HAProxy sends with
``send-proxy``/``send-proxy-v2`` whether or not the server line has ``ssl``.  The address
``getPeer()`` returns for a proxied client carries the balancer's as ``via``
(:func:`~tcpfiles.core.connections.describe_peer` shows both).  A header that names no client
(a version 2 ``LOCAL`` health check, ``PROXY UNKNOWN``) leaves the connection the balancer's
own, counted under the balancer's address, and served as a plain one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import address, interfaces
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from tcpfiles.core.connections import describe_peer
from tcpfiles.core.passthrough import TransportPassThrough
from tcpfiles.core.proxyheader import Header, ProxyHeaderError, read_header

__all__ = [
    "DEFAULT_PROXY_FROM",
    "DEFAULT_SETTINGS",
    "ProxiedIPv4Address",
    "ProxiedIPv6Address",
    "ProxyFactory",
    "ProxyProtocol",
    "ProxySettings",
    "parse_networks",
]

log = Logger(namespace="tcpfiles.core.proxy")

#: Balancers trusted unless told: this machine only.
DEFAULT_PROXY_FROM = "127.0.0.0/8,::1"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """``127.0.0.1,10.0.0.0/8,::1`` -> networks; ``none`` (or nothing) -> none; ValueError."""
    networks = []
    for part in text.split(","):
        part = part.strip()
        if part and part.lower() != "none":
            networks.append(ipaddress.ip_network(part, strict=False))
    return tuple(networks)


@dataclass(frozen=True)
class ProxySettings:
    """Who may send PROXY headers, and how long a header may take."""

    #: Balancers' networks; connections on a ``haproxy:`` listener from elsewhere are closed.
    allowed: tuple[Network, ...] = parse_networks(DEFAULT_PROXY_FROM)
    #: Seconds from the connection to the end of its header.
    deadline: float = 5.0
    #: Answers so far, by host: a few balancers ask again and again.
    _known: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def allows(self, peer: object) -> bool:
        """Whether ``peer`` (the connection's own address) is an allowed balancer; a UNIX
        socket's peer always is (the socket's permissions say who may connect)."""
        host = getattr(peer, "host", None)
        if not isinstance(host, str):
            return isinstance(peer, address.UNIXAddress)
        known = self._known.get(host)
        if known is None:
            if len(self._known) >= 1024:  # refused scanners' addresses are not kept for ever
                self._known.clear()
            known = self._known[host] = self._look_up(host)
        return known

    def _look_up(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.allowed)


#: Loopback balancers, a 5-second header deadline.
DEFAULT_SETTINGS = ProxySettings()


class ProxiedIPv4Address(address.IPv4Address):
    """A client's IPv4 address as its balancer gave it; ``via``: the balancer's address."""

    def __init__(self, source: address.IPv4Address, via: interfaces.IAddress) -> None:
        super().__init__(source.type, source.host, source.port)
        self.via = via


class ProxiedIPv6Address(address.IPv6Address):
    """A client's IPv6 address as its balancer gave it; ``via``: the balancer's address."""

    def __init__(self, source: address.IPv6Address, via: interfaces.IAddress) -> None:
        super().__init__(source.type, source.host, source.port)
        self.via = via


def _proxied(source: address.IPv4Address | address.IPv6Address, via: Any) -> Any:
    if isinstance(source, address.IPv4Address):
        return ProxiedIPv4Address(source, via)
    return ProxiedIPv6Address(source, via)


#: What a proxy layer provides, by (what its transport provides, whether the wrapped protocol
#: half-closes): worked out once per kind of connection, as the guard does.
_PROVIDES: dict[tuple[Any, bool], Any] = {}


class ProxyProtocol(TransportPassThrough, ProtocolWrapper):  # type: ignore[misc]  # disconnecting: a property here
    """One connection on a ``haproxy:`` listener: reads the header, then wraps what the
    factory builds for the client it names, as that protocol's transport."""

    factory: ProxyFactory
    transport: Any
    wrappedProtocol: Any

    def __init__(self, factory: ProxyFactory, peer: Any) -> None:
        self.factory = factory
        self.wrappedProtocol = None
        self._peer = peer  # the balancer's, until a header names the client
        self._host: Any = None
        self._buffer = b""
        self._refused = False
        self._deadline: interfaces.IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        """Start the header's deadline."""
        self.connected = True
        self.transport = transport
        settings = self.factory.settings
        self._deadline = self.factory.clock.callLater(settings.deadline, self._too_slow)

    def dataReceived(self, data: bytes) -> None:
        """The header's bytes until it is whole, then everything for the wrapped protocol."""
        wrapped = self.wrappedProtocol
        if wrapped is not None:
            wrapped.dataReceived(data)
            return
        if self._refused:
            return
        self._buffer += data
        try:
            header = read_header(self._buffer)
        except ProxyHeaderError as exc:
            self._refuse(f"bad PROXY header ({exc})")
            return
        if header is not None:
            rest = self._buffer[header.size :]
            self._buffer = b""
            self._begin(header, rest)

    def _begin(self, header: Header, rest: bytes) -> None:
        """The header is whole: build the wrapped protocol for the client it names."""
        self._cancel_deadline()
        if header.source is not None:
            self._peer = _proxied(header.source, self._peer)  # via the balancer
            self._host = header.destination
        wrapped = self.factory.wrappedFactory.buildProtocol(self._peer)
        if wrapped is None:
            self.transport.loseConnection()
            return
        self.wrappedProtocol = wrapped
        self._provide_like(self.transport, False)  # what the wrapped protocol looks at
        wrapped.makeConnection(self)
        if interfaces.IHalfCloseableProtocol.providedBy(wrapped):  # known once it is made
            self._provide_like(self.transport, True)
        if rest and self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(rest)

    def _provide_like(self, transport: Any, half: bool) -> None:
        """Provide what the transport provides, and half-close if ``half``."""
        key = (providedBy(transport), half)
        known = _PROVIDES.get(key)
        if known is not None:
            self.__provides__ = known
            return
        extra = [interfaces.IHalfCloseableProtocol] if half else []
        directlyProvides(self, *providedBy(transport), *extra)
        if len(_PROVIDES) < 64:
            _PROVIDES[key] = self.__provides__

    def _refuse(self, why: str) -> None:
        self._cancel_deadline()
        self._refused = True  # nothing more is read
        log.info("{peer}: {why}; closing", peer=describe_peer(self.transport.getPeer()), why=why)
        self.transport.loseConnection()

    def _too_slow(self) -> None:
        self._deadline = None
        seconds = self.factory.settings.deadline
        self._refuse(f"no complete PROXY header within {seconds:g} s")

    def _cancel_deadline(self) -> None:
        call, self._deadline = self._deadline, None
        if call is not None and call.active():
            call.cancel()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop the deadline; tell the wrapped protocol, if there is one yet."""
        self.connected = False
        self._cancel_deadline()
        wrapped, self.wrappedProtocol = self.wrappedProtocol, None  # no cycle left behind
        if wrapped is not None:
            wrapped.connectionLost(reason)

    # --- what the wrapped protocol sees ------------------------------------------------------

    def getPeer(self) -> Any:
        """The client the header named (with ``via``), else the balancer."""
        return self._peer

    def getHost(self) -> Any:
        """Where the client connected, as the header says; else this end of the connection."""
        return self._host if self._host is not None else self.transport.getHost()

    def logPrefix(self) -> str:
        """The wrapped protocol's, once there is one."""
        wrapped = self.wrappedProtocol
        if wrapped is None:
            return "PROXY"
        if interfaces.ILoggingContext.providedBy(wrapped):
            return str(wrapped.logPrefix())
        return type(wrapped).__name__


class _Untrusted(Protocol):
    """A connection on a ``haproxy:`` listener from a peer that is not an allowed balancer."""

    transport: Any

    def connectionMade(self) -> None:
        log.info(
            "{peer}: not an allowed PROXY balancer (--proxy-from); closing",
            peer=describe_peer(self.transport.getPeer()),
        )
        self.transport.loseConnection()


class ProxyFactory(Factory):
    """Wraps a factory (TLS's, the guard's): its connections read a PROXY header first."""

    noisy = False

    def __init__(self, wrapped: Any, clock: interfaces.IReactorTime, settings: ProxySettings):
        self.wrappedFactory = wrapped
        self.clock = clock
        self.settings = settings

    def buildProtocol(self, addr: Any) -> Protocol:
        """A header reader for an allowed balancer, else a protocol that logs and closes."""
        if not self.settings.allows(addr):
            untrusted = _Untrusted()
            untrusted.factory = self
            return untrusted
        return ProxyProtocol(self, addr)

    def doStart(self) -> None:
        """Start the wrapped factory with this one."""
        self.wrappedFactory.doStart()

    def doStop(self) -> None:
        """Stop the wrapped factory with this one."""
        self.wrappedFactory.doStop()

    def logPrefix(self) -> str:
        """The wrapped factory's (the listening port logs with it)."""
        wrapped = self.wrappedFactory
        if interfaces.ILoggingContext.providedBy(wrapped):
            return str(wrapped.logPrefix())
        return type(wrapped).__name__
