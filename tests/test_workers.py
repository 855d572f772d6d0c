"""The supervisor of ``--workers`` on a fake reactor: spawning, replacing with back-off, stopping
with the signals forwarded, and the pieces a worker uses (its role, adopted listeners, tags)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from twisted.application import service
from twisted.internet import task
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import Factory
from twisted.logger import LogLevel, LogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.core.notify import Notifier, ReadinessService
from tcpfiles.core.service import ListenerService
from tcpfiles.core.workers import (
    FDS_VARIABLE,
    INDEX_VARIABLE,
    PARENT_VARIABLE,
    STOP_MARGIN,
    WORKER_MAIN,
    Backoff,
    Supervisor,
    WorkerRole,
    adopt_listeners,
    parent_service,
    tag_events,
    worker_role,
)


class FakeProcess:
    """What spawnProcess returns: a pid, and the signals sent to it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class FakeReactor(task.Clock):
    """A clock that records the processes it is asked to spawn."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[dict[str, Any]] = []

    def spawnProcess(self, proto: Any, executable: str, args: Any, env: Any, childFDs: Any) -> Any:
        process = FakeProcess(1000 + len(self.spawned))
        proto.makeConnection(process)
        self.spawned.append(
            {"proto": proto, "executable": executable, "args": args, "env": env, "fds": childFDs}
        )
        return process

    def end(self, index: int, reason: Exception | None = None) -> None:
        """The ``index``-th spawned process ends (killed by SIGKILL unless told)."""
        proto = self.spawned[index]["proto"]
        proto.processEnded(Failure(reason or ProcessTerminated(signal=signal.SIGKILL)))


class SupervisorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.exits: list[int] = []
        self.handlers: list[Any] = []
        self.supervisor = Supervisor(
            self.reactor,
            2,
            ["/usr/bin/python3", "-c", "run()", "tcpfiles"],
            lambda: [7, 9],
            {"PATH": "/bin", "NOTIFY_SOCKET": "/run/x", "LISTEN_FDS": "1", "EXTRA": "yes"},
            30.0,
            on_worker_exit=self.exits.append,
            backoff=Backoff(first=0.1, cap=1.0, stable=10.0),
            install_signals=lambda handler: self.handlers.append(handler) is None,
        )

    def test_starts_each_worker_with_the_sockets_and_its_number(self) -> None:
        """N processes, each with fds 3, 4 mapped to the parent's, stdio inherited, the
        environment without the service manager's variables, plus its role."""
        self.supervisor.startService()
        self.assertEqual(len(self.reactor.spawned), 2)
        for number, spawned in enumerate(self.reactor.spawned, start=1):
            self.assertEqual(spawned["executable"], "/usr/bin/python3")
            self.assertEqual(spawned["args"][-1], "tcpfiles")
            self.assertEqual(spawned["fds"], {0: 0, 1: 1, 2: 2, 3: 7, 4: 9})
            env = spawned["env"]
            self.assertEqual(
                env,
                {
                    "PATH": "/bin",
                    "EXTRA": "yes",
                    INDEX_VARIABLE: str(number),
                    FDS_VARIABLE: "3,4",
                    PARENT_VARIABLE: str(os.getpid()),
                },
            )
            self.assertEqual(worker_role(env), WorkerRole(number, (3, 4), os.getpid()))
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])

    def test_socket_names_from_systemd_are_passed_on(self) -> None:
        """The parent's LISTEN_FDS was taken by Twisted; the names are passed on, with their
        count, and the worker claims them (WORKER_MAIN sets LISTEN_PID to its own pid)."""
        supervisor = Supervisor(
            self.reactor, 1, ["python"], lambda: [5], {"LISTEN_FDNAMES": "files:chat"}, 1.0
        )
        supervisor.startService()
        env = self.reactor.spawned[0]["env"]
        self.assertEqual((env["LISTEN_FDNAMES"], env["LISTEN_FDS"]), ("files:chat", "2"))
        self.assertNotIn("LISTEN_PID", env)
        self.assertIn("LISTEN_PID=str(os.getpid())", WORKER_MAIN)

    def test_a_worker_that_dies_is_replaced_after_a_growing_delay(self) -> None:
        """0.1 s, then 0.2, 0.4 ... up to the cap while replacements die at once; the hook
        hears of each pid; the other worker is left alone."""
        self.supervisor.startService()
        delays = []
        for attempt in range(6):
            dying = len(self.reactor.spawned) - 1 if attempt else 0
            self.reactor.end(dying)
            self.assertEqual(len(self.supervisor.workers), 1)
            delay = self.supervisor.delays[1]
            delays.append(delay)
            self.reactor.advance(delay - 0.01)
            self.assertNotIn(1, self.supervisor.workers)
            self.reactor.advance(0.01)
            self.assertIn(1, self.supervisor.workers)
        self.assertEqual(delays, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
        self.assertEqual(self.exits[0], 1000)
        self.assertEqual(len(self.exits), 6)
        self.assertEqual(self.supervisor.workers[2].pid, 1001)
        self.assertEqual(self.reactor.spawned[-1]["env"][INDEX_VARIABLE], "1")

    def test_a_worker_that_lived_long_enough_resets_the_delay(self) -> None:
        self.supervisor.startService()
        self.reactor.end(0)
        self.reactor.advance(0.1)
        self.reactor.end(2)  # the replacement dies at once: doubled
        self.assertEqual(self.supervisor.delays[1], 0.2)
        self.reactor.advance(0.2)
        self.reactor.advance(10.0)  # it lives 10 s
        self.reactor.end(3)
        self.assertEqual(self.supervisor.delays[1], 0.1)

    def test_a_worker_that_cannot_be_started_is_tried_again(self) -> None:
        real = self.reactor.spawnProcess
        failures = [OSError(11, "Resource temporarily unavailable")]

        def spawn(*args: Any, **kwargs: Any) -> Any:
            if failures:
                raise failures.pop()
            return real(*args, **kwargs)

        self.reactor.spawnProcess = spawn  # type: ignore[method-assign]
        self.supervisor.startService()
        self.assertEqual(sorted(self.supervisor.workers), [2])
        self.reactor.advance(0.1)
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])
        self.flushLoggedErrors()

    def test_stop_forwards_sigterm_and_fires_when_all_are_gone(self) -> None:
        self.supervisor.startService()
        stopped = self.supervisor.stopService()
        for spawned in self.reactor.spawned:
            self.assertEqual(spawned["proto"].transport.signals, ["TERM"])
        self.assertNoResult(stopped)
        self.reactor.end(0, ProcessTerminated(signal=signal.SIGTERM))
        self.assertNoResult(stopped)
        self.reactor.end(1, ProcessDone(None))
        self.successResultOf(stopped)
        self.assertEqual(self.exits, [1000, 1001])
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)  # none replaced while stopping
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_cancels_a_pending_restart(self) -> None:
        self.supervisor.startService()
        self.reactor.end(0)
        stopped = self.supervisor.stopService()
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.reactor.end(1, ProcessDone(None))
        self.successResultOf(stopped)

    def test_a_second_signal_is_forwarded_a_third_kills(self) -> None:
        self.supervisor.startService()
        stopped = self.supervisor.stopService()
        [handler] = self.handlers
        handler("SIGINT")
        transports = [spawned["proto"].transport for spawned in self.reactor.spawned]
        self.assertEqual([t.signals for t in transports], [["TERM", "TERM"]] * 2)
        self.reactor.end(0, ProcessTerminated(signal=signal.SIGTERM))
        handler("SIGTERM")
        self.assertEqual(transports[1].signals, ["TERM", "TERM", "KILL"])
        self.assertEqual(transports[0].signals, ["TERM", "TERM"])  # gone: not signalled again
        self.reactor.end(1)
        self.successResultOf(stopped)
        handler("SIGTERM")  # after the end: nothing
        self.assertEqual(transports[1].signals, ["TERM", "TERM", "KILL"])

    def test_workers_still_there_after_the_grace_period_are_killed(self) -> None:
        self.supervisor.startService()
        stopped = self.supervisor.stopService()
        self.reactor.advance(30.0 + STOP_MARGIN - 0.01)
        transports = [spawned["proto"].transport for spawned in self.reactor.spawned]
        self.assertEqual(transports[0].signals, ["TERM"])
        self.reactor.advance(0.01)
        self.assertEqual(transports[0].signals, ["TERM", "KILL"])
        self.reactor.end(0)
        self.reactor.end(1)
        self.successResultOf(stopped)

    def test_stop_with_no_worker_left(self) -> None:
        self.supervisor.startService()
        self.reactor.end(0)
        self.reactor.end(1)
        self.successResultOf(self.supervisor.stopService())
        self.assertEqual(self.handlers, [])


class WorkerSideTests(SynchronousTestCase):
    def test_role(self) -> None:
        self.assertIsNone(worker_role({}))
        self.assertEqual(
            worker_role({INDEX_VARIABLE: "2", FDS_VARIABLE: "3,4,5"}), WorkerRole(2, (3, 4, 5))
        )
        self.assertEqual(worker_role({INDEX_VARIABLE: "1", FDS_VARIABLE: ""}), WorkerRole(1, ()))
        told = {INDEX_VARIABLE: "1", FDS_VARIABLE: "3", PARENT_VARIABLE: "4242"}
        self.assertEqual(worker_role(told), WorkerRole(1, (3,), 4242))

    def test_a_worker_whose_parent_is_gone_stops_at_once(self) -> None:
        """Its parent is not the one that started it (that one died while it was starting, and
        init took it over): SIGTERM to itself, before it serves anything.  With its real
        parent, it goes on."""
        code = "import sys; from tcpfiles.core.workers import become_worker; "
        code += "become_worker(int(sys.argv[1])); print('serving')"
        orphan = subprocess.run(
            [sys.executable, "-c", code, "1"], capture_output=True, timeout=60, check=False
        )
        self.assertEqual((orphan.returncode, orphan.stdout), (-signal.SIGTERM, b""))
        child = subprocess.run(
            [sys.executable, "-c", code, str(os.getpid())],
            capture_output=True,
            timeout=60,
            check=False,
        )
        self.assertEqual((child.returncode, child.stdout), (0, b"serving\n"), child.stderr)

    def _top(self, count: int) -> tuple[service.MultiService, list[ListenerService]]:
        top = service.MultiService()
        listeners = [
            ListenerService(f"tcp:0:interface=127.0.0.{n + 1}", Factory(), object(), "files")
            for n in range(count)
        ]
        for listener in listeners:
            listener.setServiceParent(top)
        return top, listeners

    def test_adopt_listeners_in_order(self) -> None:
        top, listeners = self._top(2)
        adopt_listeners(top, [3, 4])
        self.assertEqual([listener.inherited for listener in listeners], [3, 4])
        with self.assertRaises(ValueError):
            adopt_listeners(top, [3])

    def test_parent_service_holds_the_listeners_and_keeps_readiness_last(self) -> None:
        top, listeners = self._top(2)
        readiness = ReadinessService(Notifier("/nowhere", lambda *_: None), task.Clock())
        readiness.setServiceParent(top)
        supervisor = Supervisor(FakeReactor(), 2, ["x"], None, {}, 1.0)
        parent = parent_service(top, supervisor)
        self.assertEqual(list(parent), [*listeners, supervisor, readiness])
        self.assertTrue(all(listener.held for listener in listeners))

    def test_tag_events(self) -> None:
        publisher = LogPublisher()
        seen: list[dict[str, Any]] = []
        tag_events(publisher, 3)
        publisher.addObserver(seen.append)
        publisher({"log_namespace": "tcpfiles.files", "log_level": LogLevel.info})
        publisher({"log_system": "-", "log_level": LogLevel.info})
        self.assertEqual(seen[0]["worker"], 3)
        self.assertEqual(seen[0]["log_system"], "worker 3 tcpfiles.files#info")
        self.assertEqual(seen[1]["log_system"], "worker 3 -")
