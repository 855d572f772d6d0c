"""What the tap does at start: one protocol per UDP port, binding before twistd daemonizes,
a one-line listen failure, and a word about listeners that are not TLS."""

from __future__ import annotations

import shutil
import tempfile

from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles import tap
from tcpfiles.core.fdlimit import FdLimitCheck
from tcpfiles.core.service import ListenerService
from tcpfiles.core.udp import UDPListenerService


def _options(test: SynchronousTestCase, *args: str, under_twistd: bool = False) -> tap.Options:
    root = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, root)
    # The descriptor check would raise this test process's own limit: not its business here.
    test.patch(FdLimitCheck, "privilegedStartService", lambda self: None)
    options = tap.Options()
    options.parseOptions(["--root", root, *args])
    if under_twistd:  # what twistd's ServerOptions sets on its subcommand's options
        parent = usage.Options()
        parent["nodaemon"] = True
        options.parent = parent
    return options


class _RefusingReactor(MemoryReactorClock):
    """A reactor whose TCP ports are all in use."""

    def listenTCP(self, port, factory, backlog=50, interface=""):  # type: ignore[no-untyped-def]
        raise CannotListenError(interface, port, OSError(98, "Address already in use"))


class UDPPerEndpointTests(SynchronousTestCase):
    """A datagram behaviour on two ports gets two protocols (one would serve only one port)."""

    def test_two_udp_endpoints_two_protocols(self) -> None:
        """Each UDP listener has its own protocol instance (one cannot listen on two ports)."""
        options = _options(
            self, "--serve", "udp-echo=udp:0:interface=127.0.0.1", "--serve", "udp-echo=udp:0"
        )
        reactor = MemoryReactorClock()
        top = tap.makeService(options, reactor=reactor)
        udp = [child for child in top if isinstance(child, UDPListenerService)]
        self.assertEqual(len(udp), 2)
        self.assertIsNot(udp[0].protocol, udp[1].protocol)


class BindNowTests(SynchronousTestCase):
    """Under twistd every listener is bound in makeService; a failure is one line, exit 1."""

    def test_not_under_twistd_nothing_is_bound(self) -> None:
        """An embedder's makeService opens nothing."""
        reactor = MemoryReactorClock()
        tap.makeService(_options(self, "--listen", "tcp:0:interface=127.0.0.1"), reactor=reactor)
        self.assertEqual(reactor.tcpServers, [])

    def test_under_twistd_bound_at_once_and_only_once(self) -> None:
        """Under twistd the listeners are bound before twistd starts the service, once."""
        reactor = MemoryReactorClock()
        options = _options(self, "--listen", "tcp:0:interface=127.0.0.1", under_twistd=True)
        top = tap.makeService(options, reactor=reactor)
        self.assertEqual(len(reactor.tcpServers), 1)
        top.privilegedStartService()
        top.startService()
        self.assertEqual(len(reactor.tcpServers), 1)
        top.stopService()

    def test_under_twistd_what_start_up_made_is_frozen_once_running(self) -> None:
        """gc.freeze when the reactor runs (under twistd only): an embedder's heap is theirs."""
        import gc

        reactor = MemoryReactorClock()
        tap.makeService(_options(self, "--listen", "tcp:0:interface=127.0.0.1"), reactor=reactor)
        assert gc.freeze not in [hook for hook, _, _ in reactor.whenRunningHooks]
        reactor = MemoryReactorClock()
        options = _options(self, "--listen", "tcp:0:interface=127.0.0.1", under_twistd=True)
        tap.makeService(options, reactor=reactor)
        assert gc.freeze in [hook for hook, _, _ in reactor.whenRunningHooks]

    def test_listen_failure_is_one_line(self) -> None:
        """A port in use ends makeService with SystemExit and one line naming it."""
        options = _options(self, "--listen", "tcp:8888:interface=127.0.0.1", under_twistd=True)
        with self.assertRaises(SystemExit) as caught:
            tap.makeService(options, reactor=_RefusingReactor())
        message = str(caught.exception.code)
        self.assertEqual(
            message,
            "twistd: files: cannot listen on tcp:8888:interface=127.0.0.1: Address already in use",
        )


class SecurityWordTests(SynchronousTestCase):
    """Each listener knows whether it is TLS; a plain one beside --tls-cert is warned about."""

    def test_security_of_each_kind(self) -> None:
        """tcp is plain TCP, unix a UNIX socket (ssl, TLS, is checked end to end)."""
        reactor = MemoryReactorClock()
        kinds = {
            "tcp:0": "plain TCP",
            "unix:/tmp/x.sock": "UNIX socket",
        }
        for description, word in kinds.items():
            listener = ListenerService(description, None, reactor, "files")  # type: ignore[arg-type]
            self.assertEqual(listener.security(), word)

    def test_no_warning_without_a_certificate(self) -> None:
        """Without --tls-cert a plain listener is what was asked for: no warning."""
        with capturedLogs() as events:
            tap.makeService(_options(self, "--listen", "tcp:0"), reactor=MemoryReactorClock())
        self.assertFalse([e for e in events if "is plain TCP" in formatEvent(e)])
