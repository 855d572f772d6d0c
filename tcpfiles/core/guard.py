"""The kernel's connection promises, kept for every stream behaviour: limits, idle, draining.

tcpfiles listens with a :class:`GuardedFactory` around whatever a stream behaviour's ``build()``
returns (and around the files factory), so a behaviour needs none of this code itself:

- **Limits.** Past ``max_per_peer`` connections from one address, or ``max_connections`` in
  total, a new connection is refused: it is told the wrapped factory's optional
  ``refusal_message(reason)`` bytes, then closed (the refusal is logged).
- **Idle timeout.** A connection that has read no byte, written none and had no producer
  registered for ``idle_timeout`` seconds has timed out: the protocol's optional
  ``timed_out()`` is called so that it can say goodbye and close; without one the connection is
  closed.  Either way it is aborted if it has not closed :data:`CLOSE_WITHIN` seconds later.
  A producer that is the protocol or its transport (echo's and chat's backpressure) does not
  count as work in progress; any other (a file body being sent) does.
- **Draining.** The factory's :class:`~tcpfiles.core.connections.ConnectionTracker` is drained
  by :class:`~tcpfiles.core.service.DrainingService` on shutdown: each connection's protocol is
  asked to ``drain()`` (finish what it is doing, then close) if it has that method, else it is
  closed at once.

Activity costs one clock reading per read and per write: the idle timer is not reset on every
chunk but re-armed lazily, when it fires, for whatever is left of the period.  And a connection
gets its timer only once it has lasted up to a second (one factory-wide call arms the timers
of every connection made meanwhile): most connections of a request-per-connection client are
gone by then, and never cost a DelayedCall.

The wrapper is the wrapped protocol's transport (Twisted's ``policies.ProtocolWrapper``), and
stays transparent to what protocols look at: it provides the real transport's interfaces (TLS
is still seen as TLS), forwards unknown attributes to it (``abortConnection``, ``getHandle`` for
zero-copy, ``pauseProducing``), forwards half-close and TLS handshake events when the wrapped
protocol takes them, and passes ``bufferSize``/``SEND_LIMIT`` through both ways.  Code that
writes around ``transport.write`` (``tcpfiles.core.sending``) uses :func:`beneath` and
:meth:`GuardedProtocol.touch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet import interfaces
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from tcpfiles.core.connections import ConnectionTracker, RefusedProtocol, describe_peer
from tcpfiles.core.passthrough import TransportPassThrough
from tcpfiles.core.proxy import ProxyProtocol

__all__ = [
    "ConnectionSettings",
    "GuardedFactory",
    "GuardedProtocol",
    "beneath",
    "guard_stream",
    "kernel_idle_timeout",
]

log = Logger(namespace="tcpfiles.core.guard")

#: Seconds a timed-out connection has to close (say goodbye, flush) before it is aborted.
CLOSE_WITHIN = 10.0
#: What is left of an idle period below which it counts as over (clock arithmetic in floats).
_EPSILON = 1e-6
#: Interfaces of the protocol side: the wrapper provides them only when the wrapped one does.
_PROTOCOL_SIDE = (interfaces.IHalfCloseableProtocol, interfaces.IHandshakeListener)
#: What a guard provides, by (its class, what its transport provides, what of _PROTOCOL_SIDE
#: the wrapped protocol provides): working it out took half of a connection's cost in the guard.
_PROVIDES: dict[tuple[Any, ...], Any] = {}


@dataclass(frozen=True)
class ConnectionSettings:
    """The kernel's limits for one stream behaviour (the defaults are ConnectionOptions')."""

    #: Seconds a connection may go without a byte either way (and with no producer registered).
    idle_timeout: float = 300.0
    #: Connections from one address at once.
    max_per_peer: int = 64
    #: Connections in total at once.
    max_connections: int = 1024

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ConnectionSettings:
        """From a behaviour's parsed options (``idle-timeout``, ``max-per-peer``,
        ``max-connections``); a setting the options lack (an Options class without
        ``ConnectionOptions``) keeps its default, so every behaviour is limited."""
        default = cls()

        def get(key: str, fallback: Any) -> Any:
            value = options.get(key)
            return fallback if value is None else value

        return cls(
            idle_timeout=float(get("idle-timeout", default.idle_timeout)),
            max_per_peer=int(get("max-per-peer", default.max_per_peer)),
            max_connections=int(get("max-connections", default.max_connections)),
        )


class GuardedProtocol(TransportPassThrough, ProtocolWrapper):  # type: ignore[misc]  # disconnecting: a property here
    """One connection under the kernel's guard: counted, timed for idleness, drainable."""

    factory: GuardedFactory
    transport: Any
    wrappedProtocol: Any

    def __init__(self, factory: GuardedFactory, wrapped: interfaces.IProtocol) -> None:
        super().__init__(factory, wrapped)
        self._seconds = factory.clock.seconds
        self._last = 0.0  # when a byte last moved (or a producer was unregistered)
        self._working = False  # a producer other than the connection itself is registered
        self._lost = False
        self._young = False  # enlisted, no idle timer yet: see GuardedFactory.enlist
        self._idle_call: interfaces.IDelayedCall | None = None
        self._close_call: interfaces.IDelayedCall | None = None

    # --- connection life ------------------------------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        """Take the transport's interfaces (and the protocol's half-close, handshake ones),
        connect the wrapped protocol, then count the connection and start the idle timer."""
        self._provide_like(transport)
        self.connected = True
        self.transport = transport
        self._last = self._seconds()
        self.wrappedProtocol.makeConnection(self)
        if self._lost:  # closed while it was being made: nothing to count
            return
        self.factory.enlist(self)  # its idle timer, soon
        self.factory.tracker.opened(self, transport.getPeer())  # drains it now if shutting down

    def _provide_like(self, transport: Any) -> None:
        """Provide what ``transport`` provides, and the protocol side the wrapped one does."""
        side = tuple(i.providedBy(self.wrappedProtocol) for i in _PROTOCOL_SIDE)
        key = (type(self), providedBy(transport), side)
        known = _PROVIDES.get(key)
        if known is not None:
            self.__provides__ = known  # what directlyProvides would set, already made
            return
        directlyProvides(
            self,
            *[i for i in providedBy(transport) if i not in _PROTOCOL_SIDE],
            *[i for i, provided in zip(_PROTOCOL_SIDE, side, strict=True) if provided],
        )
        if len(_PROVIDES) < 256:  # a handful of kinds of transport in practice
            _PROVIDES[key] = self.__provides__

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop the timers, stop counting the connection, tell the wrapped protocol."""
        if self._lost:
            return
        self._lost = True
        self.connected = False
        if self._young:
            self.factory.discharge()
        for call in (self._idle_call, self._close_call):
            if call is not None and call.active():
                call.cancel()
        self._idle_call = self._close_call = None
        self.factory.tracker.closed(self)
        wrapped, self.wrappedProtocol = self.wrappedProtocol, None  # no cycle left behind
        if wrapped is not None:
            wrapped.connectionLost(reason)

    def drain(self) -> None:
        """Shutting down: the protocol's ``drain()`` (finish, then close), else close now."""
        drain = getattr(self.wrappedProtocol, "drain", None)
        if drain is not None:
            drain()
        else:
            self.loseConnection()

    def logPrefix(self) -> str:
        """The wrapped protocol's, so that log lines read as they would without the guard."""
        wrapped = self.wrappedProtocol
        if wrapped is None:  # after connectionLost
            return self.__class__.__name__
        if interfaces.ILoggingContext.providedBy(wrapped):
            return str(wrapped.logPrefix())
        return type(wrapped).__name__

    # --- traffic: each read and write is activity ------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Note the activity, hand the bytes on."""
        self._last = self._seconds()
        self.wrappedProtocol.dataReceived(data)

    def write(self, data: bytes) -> None:
        """Note the activity, write."""
        self._last = self._seconds()
        self.transport.write(data)

    def writeSequence(self, data: Any) -> None:
        """Note the activity, write."""
        self._last = self._seconds()
        self.transport.writeSequence(data)

    def touch(self) -> None:
        """Bytes moved around :meth:`write` (``sendmsg`` on the socket itself): activity."""
        self._last = self._seconds()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """A producer other than the connection itself is work in progress: not idle."""
        self.transport.registerProducer(producer, streaming)
        own = producer is self or producer is self.wrappedProtocol or producer is self.transport
        self._working = not own

    def unregisterProducer(self) -> None:
        """The work is over (or paused): idleness counts from now."""
        self._working = False
        self._last = self._seconds()
        self.transport.unregisterProducer()

    # --- TLS events, for a wrapped protocol that takes them (half-close: TransportPassThrough)

    def handshakeCompleted(self) -> None:
        """The TLS handshake is done (IHandshakeListener)."""
        self.wrappedProtocol.handshakeCompleted()

    # --- the idle timeout -------------------------------------------------------------------

    def arm_idle_timer(self) -> None:
        """Start the idle timer, due a whole period after the last activity."""
        self._young = False
        timeout = self.factory.settings.idle_timeout
        left = max(0.0, self._last + timeout - self._seconds())
        self._idle_call = self.factory.clock.callLater(left, self._check_idle)

    def _check_idle(self) -> None:
        """The period may be over: time out, or wait for what is left of it."""
        self._idle_call = None
        timeout = self.factory.settings.idle_timeout
        now = self._seconds()
        left = timeout if self._working else self._last + timeout - now
        if left > _EPSILON:
            self._idle_call = self.factory.clock.callLater(left, self._check_idle)
            return
        self._close_call = self.factory.clock.callLater(self.factory.close_within, self._close_late)
        timed_out = getattr(self.wrappedProtocol, "timed_out", None)
        if timed_out is not None:
            timed_out()
        else:
            self.loseConnection()

    def _close_late(self) -> None:
        """Timed out and still not closed (a peer that reads nothing): drop it."""
        self._close_call = None
        log.info(
            "{peer}: still open {seconds:g} s after its idle timeout; dropping it",
            peer=describe_peer(self.transport.getPeer()),
            seconds=self.factory.close_within,
        )
        self.transport.abortConnection()


class GuardedFactory(WrappingFactory[GuardedProtocol]):
    """Wraps a stream behaviour's factory: its connections limited, timed out when idle, and
    drained through :attr:`tracker`.

    ``wrapped`` is any ``IProtocolFactory``; if it has ``refusal_message(reason) -> bytes``, a
    refused connection is told that.  ``clock`` is the reactor (or a ``task.Clock``);
    ``settings`` the limits (by default those of ``ConnectionOptions``' defaults).
    """

    protocol = GuardedProtocol
    noisy = False  # the wrapped factory says when it starts and stops, as without the guard

    def __init__(
        self,
        wrapped: Any,
        clock: interfaces.IReactorTime,
        settings: ConnectionSettings = ConnectionSettings(),
        close_within: float = CLOSE_WITHIN,
    ) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]  # WrappingFactory's
        self.settings = settings
        self.clock = clock
        self.close_within = close_within
        self.tracker = ConnectionTracker(settings.max_per_peer, settings.max_connections)
        #: Connections without an idle timer yet, how many of them are still open, and the
        #: call that arms their timers (well before any can fall due).
        self._young: list[GuardedProtocol] = []
        self._young_open = 0
        self._arming: interfaces.IDelayedCall | None = None
        self._arm_after = min(1.0, settings.idle_timeout / 2)

    def buildProtocol(self, addr: interfaces.IAddress | None) -> Protocol | None:  # type: ignore[override]
        """A guarded protocol, a refusal past the limits, or None if the wrapped factory
        refuses by itself."""
        reason = self.tracker.refusal(addr)
        if reason is not None:
            refusal_message = getattr(self.wrappedFactory, "refusal_message", None)
            message = refusal_message(reason) if refusal_message is not None else b""
            refused = RefusedProtocol(reason, message)
            refused.factory = self
            return refused
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped)

    def enlist(self, protocol: GuardedProtocol) -> None:
        """A new connection: its idle timer is armed within :attr:`_arm_after` seconds, if it
        is still open then."""
        protocol._young = True
        self._young.append(protocol)
        self._young_open += 1
        if self._arming is None:
            self._arming = self.clock.callLater(self._arm_after, self._arm_young)

    def discharge(self) -> None:
        """A connection without a timer yet is lost; with none left open, nothing to arm."""
        self._young_open -= 1
        if not self._young_open and self._arming is not None:
            self._arming.cancel()
            self._arming = None
            self._young.clear()

    def _arm_young(self) -> None:
        self._arming = None
        young, self._young, self._young_open = self._young, [], 0
        for protocol in young:
            if not protocol._lost:
                protocol.arm_idle_timer()

    def logPrefix(self) -> str:
        """The wrapped factory's (the listening port logs with it)."""
        wrapped = self.wrappedFactory
        if interfaces.ILoggingContext.providedBy(wrapped):
            return str(wrapped.logPrefix())
        return type(wrapped).__name__

    def registerProtocol(self, p: Any) -> None:
        """Connections are counted by :attr:`tracker`, not in a second table."""

    def unregisterProtocol(self, p: Any) -> None:
        """See :meth:`registerProtocol`."""


def kernel_idle_timeout(transport: Any) -> float | None:
    """The idle timeout the kernel's guard keeps for the connection whose protocol has this
    ``transport`` (its ``timed_out()`` is called when it runs out), or None when the
    connection is not under the guard (a factory served or tested on its own).  A protocol
    whose own idle timer would say the same can leave it to the guard."""
    if isinstance(transport, GuardedProtocol):
        return transport.factory.settings.idle_timeout
    return None


def beneath(transport: Any) -> Any:
    """The connection's own transport beneath the guard and, on a ``haproxy:`` listener, the
    PROXY layer beneath it (past its header it only passes bytes on); or ``transport`` itself.

    For code that writes to the socket itself: call :meth:`GuardedProtocol.touch` on the
    guard when it does, so that the bytes count as activity.
    """
    if isinstance(transport, GuardedProtocol):
        transport = transport.transport
        if type(transport) is ProxyProtocol:
            transport = transport.transport
    return transport


def guard_stream(
    built: Any,
    settings: ConnectionSettings,
    clock: interfaces.IReactorTime,
    trackers: list[ConnectionTracker],
) -> Any:
    """What to listen with for what a behaviour built: a stream factory guarded (once: one
    already guarded is kept), its tracker added to ``trackers`` (drained on shutdown, counted
    by the descriptor check); anything else (a datagram protocol) as it is."""
    if not hasattr(built, "buildProtocol"):
        return built
    guarded = built if isinstance(built, GuardedFactory) else GuardedFactory(built, clock, settings)
    if guarded.tracker not in trackers:
        trackers.append(guarded.tracker)
    return guarded
