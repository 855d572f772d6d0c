"""``--workers``: what it refuses, the service a parent runs, and one process by default."""

from __future__ import annotations

import sys

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles import tap
from tcpfiles.core.service import DrainingService, ListenerService
from tcpfiles.core.workers import Supervisor
from tests.helpers import temporary_directory


def parse(root: str, *args: str, twistd: dict[str, object] | None = None) -> tap.Options:
    """tap.Options parsed as twistd's subcommand (``twistd``: its options), or alone."""
    options = tap.Options()
    if twistd is not None:
        parent = usage.Options()
        parent.update({"nodaemon": True, "logfile": None, "logger": None, **twistd})
        options.parent = parent
    options.parseOptions(["--root", root, *args])
    return options


class WorkersOptionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = str(temporary_directory(self))

    def test_one_by_default_the_same_service_as_before(self) -> None:
        options = parse(self.root, twistd={})
        self.assertEqual(options["workers"], 1)
        top = tap.makeService(options, MemoryReactorClock())
        self.assertIsInstance(top, DrainingService)
        self.assertFalse([child for child in top if isinstance(child, Supervisor)])

    def test_refused(self) -> None:
        for twistd, extra, message in [
            ({"nodaemon": False}, (), "needs twistd -n"),
            ({"logfile": "x.log"}, (), "not --logfile"),
            ({}, ("--serve", "udp-echo"), "udp-echo is a datagram behaviour"),
            ({}, ("--workers", "0"), "must be positive"),
        ]:
            with self.assertRaisesRegex(usage.UsageError, message):
                parse(self.root, "--workers", "2", *extra, twistd=twistd)
        parse(self.root, "--workers", "2", twistd={"logfile": "-"})

    def test_a_parent_holds_listeners_and_supervises(self) -> None:
        """With --workers 3 the service is the parent's: the listeners, held; a supervisor of 3
        whose command is twistd -n with this reactor and --logger, and the same arguments."""
        args = ("--listen", "tcp:0:interface=127.0.0.1", "--serve", "chat", "--workers", "3")
        options = parse(self.root, *args, twistd={"logger": "tcpfiles.logs.json_logger"})
        options.parent = None  # built, not bound (the memory reactor's ports cannot be held)
        top = tap.makeService(options, MemoryReactorClock())
        children = list(top)
        listeners = [child for child in children if isinstance(child, ListenerService)]
        [supervisor] = [child for child in children if isinstance(child, Supervisor)]
        self.assertEqual([listener.label for listener in listeners], ["files", "chat"])
        self.assertTrue(all(listener.held for listener in listeners))
        self.assertEqual(supervisor.count, 3)
        command = supervisor.command
        self.assertEqual(command[0], sys.executable)
        self.assertEqual(command[3:5], ["-n", "--pidfile="])
        self.assertIn("--logger", command)
        self.assertEqual(command[command.index("tcpfiles") + 1 :], ["--root", self.root, *args])
        self.assertNotIn("--reactor", command)  # twistd's default: the workers' too

    def test_workers_run_the_reactor_twistd_was_given(self) -> None:
        """twistd --reactor asyncio: each worker is started with it too."""
        args = ("--listen", "tcp:0:interface=127.0.0.1", "--workers", "2")
        options = parse(self.root, *args, twistd={"reactor": "asyncio"})
        options.parent = None
        [supervisor] = [
            c for c in tap.makeService(options, MemoryReactorClock()) if isinstance(c, Supervisor)
        ]
        command = supervisor.command
        self.assertEqual(command[command.index("--reactor") + 1], "asyncio")
        self.assertLess(command.index("--reactor"), command.index("tcpfiles"))
