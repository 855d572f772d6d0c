"""echo and upper on fake transports."""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.core.connections import RefusedProtocol
from tcpfiles.core.guard import ConnectionSettings, GuardedFactory
from tcpfiles.echo.plugin import EchoOptions
from tcpfiles.echo.protocol import EchoFactory, EchoProtocol, UpperProtocol
from tcpfiles.testing import connect
from tests.helpers import cases, with_cases


def make(protocol=EchoProtocol):
    return EchoFactory(protocol)


def served(protocol=EchoProtocol, clock=None, *args):
    """The factory as twistd listens with it: under the kernel's guard, with these options."""
    options = EchoOptions()
    options.parseOptions(list(args))
    settings = ConnectionSettings.from_options(options)
    return GuardedFactory(make(protocol), clock or task.Clock(), settings)


@with_cases
class EchoTests(SynchronousTestCase):
    """echo and upper on fake transports, alone and under the kernel's guard."""

    @cases(
        EchoProtocol=(EchoProtocol, b"Hi \xff\x00 there\n"),
        UpperProtocol=(UpperProtocol, b"HI \xff\x00 THERE\n"),
    )
    def test_echo_whole_and_byte_by_byte(self, kind, expected) -> None:
        """Every byte comes back (upper: ASCII letters upper-cased), however it is split."""
        data = b"Hi \xff\x00 there\n"
        for pieces in ([data], [data[i : i + 1] for i in range(len(data))]):
            protocol, transport = connect(make(kind))
            for piece in pieces:
                protocol.dataReceived(piece)
            assert transport.value() == expected

    def test_backpressure_is_the_transport_itself(self) -> None:
        """The transport is registered as its own streaming producer: full buffer, no reading."""
        protocol, transport = connect(make())
        assert transport.producer is transport and transport.streaming

    def test_half_close_flushes_then_closes(self) -> None:
        """After the client half-closes, the producer is released and the connection closes."""
        protocol, transport = connect(make())
        protocol.dataReceived(b"last words")
        protocol.readConnectionLost()
        assert transport.producer is None and transport.disconnecting
        assert transport.value() == b"last words"

    def test_idle_timeout(self) -> None:
        """A silent connection closes after the idle timeout; traffic resets it."""
        clock = task.Clock()
        protocol, transport = connect(served(EchoProtocol, clock, "--idle-timeout", "10"))
        clock.advance(9)
        protocol.dataReceived(b"x")
        clock.advance(9)
        assert not transport.disconnecting
        clock.advance(1)
        assert transport.disconnecting
        protocol.connectionLost(None)
        assert not clock.getDelayedCalls()

    def test_connection_limit_refuses_silently(self) -> None:
        """Past --max-per-peer a connection is closed without a word (echo has no error syntax)."""
        factory = served(EchoProtocol, None, "--max-per-peer", "1")
        connect(factory)
        refused, transport = connect(factory)
        assert isinstance(refused, RefusedProtocol)
        assert transport.value() == b"" and transport.disconnecting
