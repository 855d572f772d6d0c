"""The files protocol under the kernel's guard, as twistd serves it: the kernel's idle timeout
and the protocol's own meet without saying anything twice."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.testing import connect, respond
from tests.files.helpers import served_factory


class GuardedFilesTests(SynchronousTestCase):
    """--idle-timeout is both files' own timer and the kernel's."""

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root)
        with open(os.path.join(self.root, "a.txt"), "wb") as f:
            f.write(b"alpha\n")
        self.clock = task.Clock()

    def test_both_timeouts_at_once_say_it_once(self) -> None:
        """The kernel's timer and files' own fall due in the same instant: one ERR line."""
        protocol, transport = connect(served_factory(self.root, self.clock, idle_timeout=300))
        self.clock.advance(299)
        respond(protocol, transport, b"GET a.txt\n")
        transport.clear()
        self.clock.advance(299)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(transport.value(), b"ERR timeout idle for 300 s; closing\n")
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_kernel_first_gives_files_answer(self) -> None:
        """Fired by the kernel alone (files' own timer gone), the answer is still files'."""
        protocol, transport = connect(served_factory(self.root, self.clock, idle_timeout=300))
        protocol.wrappedProtocol.state.leave()  # its timer gone: as if the kernel's fell due first
        self.clock.advance(300)
        self.assertEqual(transport.value(), b"ERR timeout idle for 300 s; closing\n")
        self.assertTrue(transport.disconnecting)

    def test_one_timer_per_connection_the_kernels(self) -> None:
        """Under a guard with the same idle timeout, files arms no idle timer of its own (the
        kernel's calls its timed_out); under one with another, or none, it does."""
        from tcpfiles.core.guard import ConnectionSettings, GuardedFactory
        from tests.files.helpers import make_factory

        protocol, transport = connect(served_factory(self.root, self.clock, idle_timeout=300))
        self.clock.advance(2)  # the kernel's timer is armed within a second
        respond(protocol, transport, b"GET a.txt\n")
        assert len(self.clock.getDelayedCalls()) == 1
        assert protocol.wrappedProtocol.idle.timer is None
        files = make_factory(self.root, self.clock, idle_timeout=300)
        other = GuardedFactory(files, self.clock, ConnectionSettings(idle_timeout=100))
        protocol, transport = connect(other)
        assert protocol.wrappedProtocol.idle.timer is not None
        protocol, transport = connect(files)
        assert protocol.idle.timer is not None

    def test_a_lost_connection_is_freed_without_the_garbage_collector(self) -> None:
        """Nothing of a closed connection waits for the cyclic collector: its protocol, and
        the guard around it, go when the last reference does."""
        import gc
        import weakref

        protocol, transport = connect(served_factory(self.root, self.clock))
        respond(protocol, transport, b"GET a.txt\n")
        files = weakref.ref(protocol.wrappedProtocol)
        guard = weakref.ref(protocol)
        protocol.connectionLost(None)
        gc.disable()
        self.addCleanup(gc.enable)
        del protocol, transport
        assert files() is None and guard() is None

    def test_a_request_that_moves_nothing_for_the_timeout_is_closed(self) -> None:
        """A request waiting on the file system with no byte moving either way (and no producer)
        for the idle timeout is closed, without an answer."""
        pending: list[defer.Deferred[object]] = []

        def later(f: object, *args: object) -> defer.Deferred[object]:
            d: defer.Deferred[object] = defer.Deferred()
            pending.append(d)
            return d

        factory = served_factory(self.root, self.clock, idle_timeout=60, defer_to_thread=later)
        protocol, transport = connect(factory)
        protocol.dataReceived(b"STAT a.txt\n")
        self.assertTrue(pending)
        self.clock.advance(59.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
