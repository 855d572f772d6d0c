"""A behaviour's connections in memory: a protocol on a ``StringTransport``, a fake clock.

Build a behaviour's factory the way the server does, behind the kernel's guard, and drive one
connection byte by byte or whole::

    from twisted.internet.testing import MemoryReactorClock
    from tcpfiles.echo.plugin import echo
    from tcpfiles.testing import Connection, build_guarded

    clock = MemoryReactorClock()
    factory = build_guarded(echo, {"idle-timeout": 5}, clock=clock)
    connection = Connection(factory)
    assert connection.exchange(b"hi\\n", byte_by_byte=True) == b"hi\\n"
    clock.advance(5)  # the kernel's idle timeout
    assert connection.closing
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet import interfaces, task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import connectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python import usage
from twisted.python.failure import Failure

from tcpfiles.compose import find, parse_options
from tcpfiles.core.guard import ConnectionSettings, GuardedFactory, guard_stream
from tcpfiles.core.plugin import Context, is_datagram
from tcpfiles.tree.paths import Root

#: The peer an in-memory connection comes from unless told (TEST-NET-1, never a real host).
PEER = ("192.0.2.7", 40000)


def connect(
    factory: interfaces.IProtocolFactory,
    host: str = PEER[0],
    port: int = PEER[1],
    transport: StringTransport | None = None,
) -> tuple[Any, StringTransport]:
    """A protocol built by ``factory`` for the peer ``host:port``, connected to ``transport``
    (a new ``StringTransport`` by default); ``(protocol, transport)``.

    ``protocol`` is what the transport delivers to: with a :class:`GuardedFactory`, the guard
    (its ``wrappedProtocol`` is the behaviour's own), or the refusal past the limits::

        protocol, transport = connect(factory)
        protocol.dataReceived(b"hello\\n")
        transport.value()  # what it wrote
    """
    address = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(address)
    if protocol is None:
        raise ValueError(f"{factory!r} refused the connection (buildProtocol returned None)")
    if transport is None:
        transport = StringTransport(peerAddress=address)  # type: ignore[no-untyped-call]
    protocol.makeConnection(transport)
    return protocol, transport


def pump(transport: StringTransport, limit: int = 10_000) -> None:
    """Act as a socket that drains at once: ask a registered pull producer (a file body) for
    more until it unregisters or the connection closes; AssertionError after ``limit`` asks.
    A push producer (streaming) is left alone: it writes by itself, and a ``StringTransport``
    never pauses it (a :class:`PausingTransport` does)."""
    for _ in range(limit):
        if transport.producer is None or transport.streaming or transport.disconnecting:
            return
        transport.producer.resumeProducing()
    raise AssertionError("producer never finished")


def respond(
    protocol: Any, transport: StringTransport, data: bytes, byte_by_byte: bool = False
) -> bytes:
    """Feed ``data`` (whole, or one byte at a time), let bodies flow (:func:`pump`), and return
    what was written in answer (the transport is cleared first)."""
    transport.clear()  # type: ignore[no-untyped-call]
    for piece in _pieces(data, byte_by_byte):
        protocol.dataReceived(piece)
        pump(transport)
    return bytes(transport.value())  # type: ignore[no-untyped-call]


def _pieces(data: bytes, byte_by_byte: bool) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]


class PausingTransport(StringTransport):
    """A ``StringTransport`` that behaves like Twisted's socket transports towards a push
    producer: it pauses it once more than ``limit`` bytes are buffered (a peer that does not
    read), and :meth:`drain` (the peer read everything) resumes it::

        transport = PausingTransport(64 * 1024)
        protocol, _ = connect(factory, transport=transport)
        ...
        transport.drain()
    """

    def __init__(
        self,
        limit: int,
        hostAddress: interfaces.IAddress | None = None,  # noqa: N803 - StringTransport's names
        peerAddress: interfaces.IAddress | None = None,  # noqa: N803
    ) -> None:
        super().__init__(hostAddress, peerAddress)  # type: ignore[no-untyped-call]
        self.limit = limit

    def write(self, data: bytes) -> None:
        """Buffer, and pause a push producer past the limit."""
        super().write(data)  # type: ignore[no-untyped-call]
        buffered = len(self.value())  # type: ignore[no-untyped-call]
        if self.producer is not None and self.streaming and buffered > self.limit:
            self.producer.pauseProducing()

    def drain(self) -> None:
        """The peer read everything: clear the buffer and resume the producer."""
        self.clear()  # type: ignore[no-untyped-call]
        if self.producer is not None:
            self.producer.resumeProducing()


def guarded(
    factory: interfaces.IProtocolFactory,
    clock: interfaces.IReactorTime | None = None,
    **settings: Any,
) -> GuardedFactory:
    """``factory`` under the kernel's guard, as the server listens with it.

    ``settings`` are :class:`~tcpfiles.core.guard.ConnectionSettings` fields
    (``idle_timeout=10``, ``max_per_peer=2``); ``clock`` by default the factory's own
    ``clock`` attribute, else a new ``task.Clock``.
    """
    clock = clock or getattr(factory, "clock", None) or task.Clock()
    return GuardedFactory(factory, clock, ConnectionSettings(**settings))


def build_guarded(
    behaviour: Any,
    options: usage.Options | Mapping[str, Any] | None = None,
    *,
    context: Context | None = None,
    clock: Any = None,
    root: str | Root | None = None,
    writable: bool = False,
) -> GuardedFactory:
    """Build a stream behaviour as the server does: parse its ``options`` (a mapping, as
    :class:`tcpfiles.compose.Serve` takes, or parsed Options; None for its defaults), call its
    ``build(options, context)``, and put the result behind the kernel's guard with the limits
    and idle timeout of those options (what :func:`tcpfiles.compose.make_service` does).

    ``behaviour``: an ``IBehaviour`` or an installed one's name.  ``context``: what it is built
    with; by default a :class:`~tcpfiles.core.plugin.Context` with ``clock`` as its reactor,
    ``root`` (None: no files) and ``writable``.  ``clock``: by default the context's reactor,
    else a new ``MemoryReactorClock``; the guard's timers run on it (``factory.clock``).
    ValueError for options the behaviour refuses; TypeError for a datagram behaviour.
    """
    if isinstance(behaviour, str):
        behaviour = find(behaviour)
    if is_datagram(behaviour):
        raise TypeError(f"{behaviour.name} is a datagram behaviour: call its build() directly")
    if not isinstance(options, usage.Options):
        try:
            options = parse_options(behaviour, options or {})
        except usage.UsageError as exc:
            raise ValueError(f"{behaviour.name}: {exc}") from None
    if clock is None:
        clock = context.reactor if context is not None else _memory_reactor()
    if context is None:
        served = None if root is None else root if isinstance(root, Root) else Root.at(root)
        context = Context(reactor=clock, root=served, writable=writable)
    built = behaviour.build(options, context)
    guard: GuardedFactory = guard_stream(built, ConnectionSettings.from_options(options), clock, [])
    return guard


def _memory_reactor() -> MemoryReactorClock:
    return MemoryReactorClock()  # type: ignore[no-untyped-call]


class Connection:
    """One connection of ``factory``'s in memory: the protocol, its ``StringTransport`` and
    the clock its timers run on, with the moves a test makes.

    ``clock``: by default the factory's ``clock`` (a :func:`build_guarded` factory has one).
    ``peer``: the (host, port) it comes from.  ``transport``: e.g. a :class:`PausingTransport`.
    """

    def __init__(
        self,
        factory: interfaces.IProtocolFactory,
        *,
        clock: Any = None,
        peer: tuple[str, int] = PEER,
        transport: StringTransport | None = None,
    ) -> None:
        self.factory = factory
        self.clock = clock if clock is not None else getattr(factory, "clock", None)
        self.protocol, self.transport = connect(factory, *peer, transport=transport)
        self._lost = False

    def feed(self, data: bytes, *, byte_by_byte: bool = False) -> None:
        """Deliver ``data`` from the peer, whole or one byte at a time, letting bodies flow
        (:func:`pump`) after each piece."""
        for piece in _pieces(data, byte_by_byte):
            if self._lost:
                raise AssertionError(f"the connection is lost; cannot deliver {piece!r}")
            self.protocol.dataReceived(piece)
            pump(self.transport)

    def exchange(self, data: bytes, *, byte_by_byte: bool = False) -> bytes:
        """Forget what was written so far, :meth:`feed` ``data``, return what was written."""
        self.transport.clear()  # type: ignore[no-untyped-call]
        self.feed(data, byte_by_byte=byte_by_byte)
        return self.take()

    def written(self) -> bytes:
        """Everything written and not yet taken."""
        return bytes(self.transport.value())  # type: ignore[no-untyped-call]

    def take(self) -> bytes:
        """What was written since the last take (or exchange); forgets it."""
        data = self.written()
        self.transport.clear()  # type: ignore[no-untyped-call]
        return data

    @property
    def closing(self) -> bool:
        """Whether the server side has asked to close (or abort) the connection."""
        return bool(self.transport.disconnecting)

    def advance(self, seconds: float) -> None:
        """Move the clock on (timeouts fall due)."""
        if self.clock is None:
            raise AssertionError("no clock: pass clock= (a task.Clock or MemoryReactorClock)")
        self.clock.advance(seconds)

    def end_input(self) -> None:
        """The peer half-closes (``shutdown(SHUT_WR)``, ``nc -N``): ``readConnectionLost`` for
        a half-closeable protocol, else the connection is lost, as Twisted does."""
        if interfaces.IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.readConnectionLost()
        else:
            self.lose()

    def lose(self, reason: Failure | None = None) -> None:
        """The connection is gone (by default a clean close): ``connectionLost``, once.  Call
        it after the server closed (:attr:`closing`) as a socket would, so that the guard stops
        counting the connection."""
        if self._lost:
            return
        self._lost = True
        self.transport.disconnected = True
        self.protocol.connectionLost(reason or connectionDone)
