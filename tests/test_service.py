"""DrainingService: listeners first, then a bounded wait, then the stragglers are dropped."""

from __future__ import annotations

import socket

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.core.service import check_server_string, systemd_failure
from tcpfiles.files import make_files_service
from tcpfiles.testing import connect, pump
from tests.helpers import temporary_directory


class DrainingTests(SynchronousTestCase):
    """A files service stopped while a 1 MiB GET is in flight."""

    def stop_during_a_transfer(self, grace: float):
        """A started files service with a 1 MiB GET in flight, asked to stop."""
        root = temporary_directory(self)
        (root / "f.bin").write_bytes(b"x" * (1 << 20))
        reactor = MemoryReactorClock()
        service = make_files_service(str(root), ["tcp:0"], reactor, grace=grace)
        service.startService()
        protocol, transport = connect(service.factory)
        protocol.dataReceived(b"GET f.bin\n")
        return reactor, protocol, transport, service.stopService()

    def test_stop_waits_for_a_transfer_then_finishes(self) -> None:
        """Stopping waits while a body is going out and fires once it is done."""
        reactor, protocol, transport, stopped = self.stop_during_a_transfer(grace=10)
        assert reactor.tcpServers and not stopped.called
        pump(transport)
        assert transport.disconnecting
        protocol.connectionLost(None)
        assert stopped.called
        assert not reactor.getDelayedCalls()

    def test_stop_drops_stragglers_after_the_grace_period(self) -> None:
        """A transfer still running when the grace period ends is aborted, and stop completes."""
        reactor, protocol, transport, stopped = self.stop_during_a_transfer(grace=5)
        reactor.advance(4.9)
        assert not stopped.called and not transport.disconnecting
        reactor.advance(0.1)
        assert transport.disconnecting  # aborted
        protocol.connectionLost(None)
        reactor.advance(0)
        assert stopped.called


class SystemdFailureTests(SynchronousTestCase):
    """What a ``systemd:`` endpoint that finds no socket says, instead of Twisted's
    "list index out of range"."""

    def test_a_listening_socket_without_names(self) -> None:
        with socket.socket() as listening:
            listening.bind(("127.0.0.1", 0))
            listening.listen()
            text = systemd_failure({}, first=listening.fileno())
        self.assertIn("without its name (LISTEN_FDNAMES)", text)
        self.assertIn("FileDescriptorName=", text)

    def test_names_that_do_not_match(self) -> None:
        with socket.socket() as unbound:  # not listening: not systemd's
            text = systemd_failure({"LISTEN_FDNAMES": "files:chat"}, first=unbound.fileno())
        self.assertIn("no such socket among those systemd passed (names: files, chat)", text)

    def test_nothing_passed(self) -> None:
        self.assertIn("(names: none)", systemd_failure({}, first=1 << 20))
        with self.assertRaisesRegex(ValueError, "systemd passed|names: "):
            check_server_string("systemd:domain=INET:name=surely-not-passed")
