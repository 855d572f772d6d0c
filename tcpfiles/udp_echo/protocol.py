"""``udp-echo``: each datagram back to its sender; and listening on ``udp:`` endpoint strings.

Twisted has no endpoint API for UDP, so :func:`parse_udp` reads ``udp:PORT[:interface=HOST]``
and :class:`UDPListenerService` binds it.  The reply is never larger than the request, so the
service cannot be used to amplify traffic.

Like inetd's built-in echo, :class:`UDPEcho` never talks to itself or to another service: it
drops datagrams whose source port is its own port (from any address: that also stops two echo
servers on the same port pointed at each other), a well-known service port (below
``--udp-echo-min-source-port``), port 0, or a broadcast, multicast or unspecified address.  What
is left is rate-limited by token buckets, per source address and in total, in replies and in
bytes; a loop between two echo servers on other ports therefore dies once a bucket is empty.
Every drop is silent on the wire, counted, and logged once per interval.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from twisted.internet import error
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

__all__ = [
    "DropReport",
    "EchoSettings",
    "Rates",
    "ReplyLimiter",
    "TokenBucket",
    "UDPEcho",
    "refused_host",
]

log = Logger(namespace="tcpfiles.udp_echo.protocol")


# --- rate limits ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rates:
    """A steady rate of replies and of bytes, and how many seconds of it a full bucket holds."""

    replies: float
    nbytes: float
    burst: float

    @property
    def reply_capacity(self) -> float:
        """Replies a full bucket allows at once (at least one)."""
        return max(1.0, self.replies * self.burst)

    @property
    def byte_capacity(self) -> float:
        """Bytes a full bucket allows at once."""
        return self.nbytes * self.burst


class TokenBucket:
    """Tokens for replies and for bytes, refilled from the clock at :class:`Rates`, capped."""

    __slots__ = ("nbytes", "rates", "replies", "stamp")

    def __init__(self, rates: Rates, now: float) -> None:
        self.rates = rates
        self.replies = rates.reply_capacity
        self.nbytes = rates.byte_capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        """Add what the time since the last refill earned (a clock going back earns nothing)."""
        elapsed = max(0.0, now - self.stamp)
        self.stamp = max(self.stamp, now)
        self.replies = min(self.rates.reply_capacity, self.replies + elapsed * self.rates.replies)
        self.nbytes = min(self.rates.byte_capacity, self.nbytes + elapsed * self.rates.nbytes)

    def allows(self, length: int, now: float) -> bool:
        """Whether one reply of ``length`` bytes fits now (spends nothing)."""
        self.refill(now)
        return self.replies >= 1.0 and self.nbytes >= length

    def spend(self, length: int) -> None:
        """Take one reply of ``length`` bytes (after :meth:`allows` said yes)."""
        self.replies -= 1.0
        self.nbytes -= length

    def full_again_at(self) -> float:
        """When an untouched bucket is full again, so that forgetting it changes nothing."""
        return self.stamp + self.rates.burst


class ReplyLimiter:
    """Token buckets per source address and in total; bounded table, idle entries expire.

    An address's bucket is forgotten once it would be full again (``burst`` seconds idle), and
    when the table holds ``max_peers`` addresses the least recently seen one is dropped; either
    way memory stays bounded however many sources are spoofed, and the total bucket still caps
    the replies.
    """

    def __init__(self, clock: IReactorTime, per_peer: Rates, total: Rates, max_peers: int) -> None:
        self.clock = clock
        self.per_peer = per_peer
        self.max_peers = max_peers
        self.total = TokenBucket(total, clock.seconds())
        self.peers: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, host: str, length: int) -> bool:
        """Spend a reply of ``length`` bytes to ``host`` if its bucket and the total allow it."""
        now = self.clock.seconds()
        peer = self._bucket(host, now)
        if not (peer.allows(length, now) and self.total.allows(length, now)):
            return False
        peer.spend(length)
        self.total.spend(length)
        return True

    def _bucket(self, host: str, now: float) -> TokenBucket:
        """The bucket of ``host``, made (full) if new, moved to the most recent end."""
        bucket = self.peers.get(host)
        if bucket is not None:
            self.peers.move_to_end(host)
            return bucket
        self._expire(now)
        bucket = self.peers[host] = TokenBucket(self.per_peer, now)
        return bucket

    def _expire(self, now: float) -> None:
        """Forget buckets full again (oldest first), and the oldest while the table is full."""
        while self.peers:
            oldest = next(iter(self.peers.values()))
            if oldest.full_again_at() > now and len(self.peers) < self.max_peers:
                return
            self.peers.popitem(last=False)


# --- drops, counted and logged once per interval --------------------------------------------------


class DropReport:
    """Counts dropped datagrams by reason; one log line per interval with drops, never more."""

    REASONS = ("rate", "looped", "failed")

    def __init__(self, clock: IReactorTime, interval: float, label: str) -> None:
        self.clock = clock
        self.interval = interval
        self.label = label
        self.counts = dict.fromkeys(self.REASONS, 0)
        self.total = dict.fromkeys(self.REASONS, 0)
        self._pending: IDelayedCall | None = None

    def count(self, reason: str) -> None:
        """One more drop for ``reason``; the report goes out at the end of the interval."""
        self.counts[reason] += 1
        self.total[reason] += 1
        if self._pending is None:
            self._pending = self.clock.callLater(self.interval, self.flush)

    def flush(self) -> None:
        """Log the drops counted since the last report (if any) and start counting afresh."""
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        dropped = sum(self.counts.values())
        if dropped:
            log.warn(
                "{label} dropped {dropped} datagrams ({rate} rate, {looped} looped, "
                "{failed} failed) in the last {interval:g} s",
                label=self.label,
                dropped=dropped,
                interval=self.interval,
                **self.counts,
            )
        self.counts = dict.fromkeys(self.REASONS, 0)


# --- the protocol ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EchoSettings:
    """What :class:`UDPEcho` refuses and how fast it may answer (the defaults of the options)."""

    min_source_port: int = 1024
    per_peer: Rates = Rates(replies=100.0, nbytes=1 << 20, burst=2.0)
    total: Rates = Rates(replies=10_000.0, nbytes=32 << 20, burst=2.0)
    max_peers: int = 10_000
    log_interval: float = 10.0


def refused_host(host: str) -> bool:
    """An address no reply may go to: unspecified, broadcast, multicast or reserved (240/4)."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket: judge the IPv4 address it carries
    if isinstance(address, ipaddress.IPv4Address) and address.is_reserved:
        return True  # 240.0.0.0/4 and 255.255.255.255
    return address.is_unspecified or address.is_multicast


class UDPEcho(DatagramProtocol):
    """Return every datagram to where it came from, unless it would loop or is over the rate."""

    transport: Any

    def __init__(
        self,
        clock: IReactorTime,
        settings: EchoSettings | None = None,
        label: str = "udp-echo",
        *,
        sibling_of: UDPEcho | None = None,
    ) -> None:
        self.settings = settings or EchoSettings()
        self.limiter: ReplyLimiter
        self.drops: DropReport
        self.own_ports: set[int]
        if sibling_of is not None:  # one more port of the same service: see :meth:`sibling`
            self.limiter, self.drops = sibling_of.limiter, sibling_of.drops
            self.own_ports = sibling_of.own_ports
        else:
            self.limiter = ReplyLimiter(
                clock, self.settings.per_peer, self.settings.total, self.settings.max_peers
            )
            self.drops = DropReport(clock, self.settings.log_interval, label)
            self.own_ports = set()  # this echo's port and its siblings': never answered
        self.own_port = 0

    def sibling(self) -> UDPEcho:
        """The echo for one more port of the same service.

        It shares the port set, the limits and the drop report: one echo port never answers
        another (they would bounce a datagram between them), and the total rate is one for the
        whole service, however many ports it listens on.
        """
        return UDPEcho(self.limiter.clock, self.settings, sibling_of=self)

    def startProtocol(self) -> None:
        """Note our own port once (``getHost`` is a system call)."""
        self.own_port = self.transport.getHost().port
        self.own_ports.add(self.own_port)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Send it back, or drop it silently (counted)."""
        host, port = addr[0], addr[1]
        if self._looped(host, port):
            self.drops.count("looped")
        elif not self.limiter.allow(host, len(datagram)):
            self.drops.count("rate")
        else:
            self._reply(datagram, addr)

    def _looped(self, host: str, port: int) -> bool:
        """From our own port (any address), a service port, port 0, or no-reply address."""
        if port == 0 or port < self.settings.min_source_port:
            return True
        if port in self.own_ports:
            return True
        return refused_host(host)

    def _reply(self, datagram: bytes, addr: Any) -> None:
        """Write the reply; a send the kernel refuses (full buffer, unreachable) is a drop."""
        try:
            self.transport.write(datagram, addr)
        except (OSError, error.MessageLengthError, error.InvalidAddressError):
            self.drops.count("failed")

    def stopProtocol(self) -> None:
        """Report what is still counted: nothing is left scheduled."""
        self.own_ports.discard(self.own_port)
        self.drops.flush()


# --- options and the behaviour --------------------------------------------------------------------
