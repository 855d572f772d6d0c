"""Every core on one host: a parent that holds the listening sockets, and workers that serve them.

With ``twistd tcpfiles --workers N`` the twistd process becomes a parent. It binds every stream
listener itself (bind errors surface at once) but never accepts on them
(:attr:`~tcpfiles.core.service.ListenerService.held`); :class:`Supervisor` starts ``N`` worker
processes that inherit those sockets as descriptors 3, 4, ... (:data:`FDS_VARIABLE` lists them,
in the order of the service's listeners) and serve them with the same service a single process
runs (:func:`adopt_listeners`).  The kernel keeps one accept queue per socket, shared by every
worker: a worker that dies leaves its queued connections to the others, and the parent starts
another one after a back-off.  Not ``SO_REUSEPORT``, whose closing sockets drop their queues.

Stopping: the first SIGTERM/SIGINT the parent gets is forwarded to every worker, which drains
within ``--grace`` as a single process does; the parent exits once all have.  A second signal is
forwarded too (a worker's second signal drops what is left); a third, or the grace period and a
margin running out, kills what is still there.  Workers run in a process group of their own, so a
terminal's Ctrl-C reaches the parent alone, and get SIGTERM if the parent dies.

Hooks (for a metrics endpoint summing the workers): ``env`` is added to each worker's
environment, ``on_worker_exit(pid)`` is called for each one that ends, whatever the reason.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcpfiles.core.notify import ReadinessService
from tcpfiles.core.service import ListenerService

__all__ = [
    "FDS_VARIABLE",
    "INDEX_VARIABLE",
    "PARENT_ONLY",
    "PARENT_VARIABLE",
    "STOP_MARGIN",
    "WORKER_MAIN",
    "Backoff",
    "Supervisor",
    "WorkerRole",
    "adopt_listeners",
    "become_worker",
    "parent_service",
    "tag_events",
    "worker_role",
]

log = Logger(namespace="tcpfiles.core.workers")

#: The variable that makes a process a worker: its number, 1 to N.
INDEX_VARIABLE = "TCPFILES_WORKER"
#: The inherited listening descriptors, comma-separated, in the order of the service's listeners.
FDS_VARIABLE = "TCPFILES_WORKER_FDS"
#: The parent's pid: a worker whose parent is already gone when it starts stops at once.
PARENT_VARIABLE = "TCPFILES_WORKER_PARENT"
#: What a service manager tells the process it started, the parent: never passed to workers.
PARENT_ONLY = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)
#: Seconds the parent waits past the grace period before it kills the workers still there.
STOP_MARGIN = 5.0
#: What a worker runs (``python -c WORKER_MAIN twistd-arguments...``): twistd, after claiming
#: the names of the sockets systemd passed to its parent (``LISTEN_PID`` is the worker's own), so
#: that its ``systemd:`` endpoint strings parse as the parent's did; the sockets it serves are
#: the ones :data:`FDS_VARIABLE` lists.
WORKER_MAIN = (
    "import os; 'LISTEN_FDS' in os.environ and os.environ.update(LISTEN_PID=str(os.getpid())); "
    "from twisted.scripts.twistd import run; run()"
)


@dataclass(frozen=True)
class Backoff:
    """Delays before a worker that died is replaced: ``first`` seconds, doubled each time the
    replacement dies too, up to ``cap``; back to ``first`` once a worker lived ``stable`` s."""

    first: float = 0.1
    cap: float = 10.0
    stable: float = 30.0

    def after(self, previous: float | None, lived: float) -> float:
        """The delay for the next start, given the last one and how long the worker lived."""
        if previous is None or lived >= self.stable:
            return self.first
        return min(self.cap, previous * 2)


class _Worker(protocol.ProcessProtocol):
    """One running worker: its number, pid and start time; tells the supervisor its end."""

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.pid = 0
        self.started = 0.0

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._ended(self, reason)


def _status(reason: Failure, stopping: bool = False) -> str:
    """``exited with status 3`` / ``was killed by SIGKILL``; ``stopped`` for what a worker
    that was told to stop does (twistd ends with the SIGTERM it got, or 0)."""
    value = reason.value
    sig = getattr(value, "signal", None)
    if stopping and sig in (None, signal.SIGTERM) and not getattr(value, "exitCode", 0):
        return "stopped"
    if sig:
        return f"was killed by {signal.Signals(sig).name}"
    return f"exited with status {getattr(value, 'exitCode', None)}"


class Supervisor(service.Service):
    """Run ``count`` workers, each ``command`` with the listening descriptors ``fds()`` handed
    down as 3, 4, ...; replace any that dies while running; stop them all on stop.

    ``command``: the worker's argv, ``command[0]`` the executable.  ``env``: the workers'
    environment (the parent's :data:`PARENT_ONLY` variables are left out; :data:`INDEX_VARIABLE`
    and :data:`FDS_VARIABLE` are added).  ``grace``: the workers' own; the parent kills those
    still there :data:`STOP_MARGIN` seconds after it.  ``on_worker_exit(pid)``: called for every
    worker that ends.  ``install_signals(handler)``: makes SIGINT/SIGTERM call ``handler`` once
    stopping began (the default does it with :mod:`signal`, in the main thread only).
    """

    def __init__(
        self,
        reactor: Any,
        count: int,
        command: Sequence[str],
        fds: Callable[[], Sequence[int]] | None,
        env: Mapping[str, str],
        grace: float,
        *,
        on_worker_exit: Callable[[int], object] | None = None,
        backoff: Backoff = Backoff(),
        install_signals: Callable[[Callable[[str], None]], bool] | None = None,
    ) -> None:
        self.reactor = reactor
        self.count = count
        self.command = list(command)
        self.fds = fds or (lambda: ())
        self.env = {k: v for k, v in env.items() if k not in PARENT_ONLY}
        self.env.update(_socket_names(env))
        self.grace = grace
        self.on_worker_exit = on_worker_exit
        self.backoff = backoff
        self.install_signals = install_signals or _install_signals
        self.workers: dict[int, _Worker] = {}
        self.delays: dict[int, float] = {}
        self.pending: dict[int, Any] = {}  # index -> the delayed call that starts it again
        self.stopped: defer.Deferred[None] | None = None
        self.signals = 0  # signals after the one that began the stop
        self._deadline: Any = None

    def startService(self) -> None:
        """Start every worker."""
        super().startService()  # type: ignore[no-untyped-call]
        for index in range(1, self.count + 1):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self.pending.pop(index, None)
        fds = list(self.fds())
        child_fds: dict[int, Any] = {0: 0, 1: 1, 2: 2}
        child_fds.update({3 + n: fd for n, fd in enumerate(fds)})
        env = {
            **self.env,
            INDEX_VARIABLE: str(index),
            FDS_VARIABLE: ",".join(str(3 + n) for n in range(len(fds))),
            PARENT_VARIABLE: str(os.getpid()),
        }
        worker = _Worker(self, index)
        try:
            transport = self.reactor.spawnProcess(
                worker, self.command[0], self.command, env=env, childFDs=child_fds
            )
        except Exception as exc:  # noqa: BLE001 - out of processes or memory: try again later
            delay = self.backoff.after(self.delays.get(index), 0.0)
            self.delays[index] = delay
            log.error(
                "cannot start worker {index}: {error}; trying again in {delay:g} s",
                index=index,
                error=exc,
                delay=delay,
            )
            self.pending[index] = self.reactor.callLater(delay, self._spawn, index)
            return
        worker.pid = transport.pid
        worker.started = self.reactor.seconds()
        self.workers[index] = worker
        log.info("started worker {index} (pid {pid})", index=index, pid=worker.pid)

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if self.on_worker_exit is not None:
            self.on_worker_exit(worker.pid)
        status = _status(reason, stopping=self.stopped is not None)
        if self.stopped is not None:
            log.info(
                "worker {index} (pid {pid}) {status}",
                index=worker.index,
                pid=worker.pid,
                status=status,
            )
            if not self.workers:
                self._all_gone()
            return
        lived = self.reactor.seconds() - worker.started
        delay = self.backoff.after(self.delays.get(worker.index), lived)
        self.delays[worker.index] = delay
        log.warn(
            "worker {index} (pid {pid}) {status} after {lived:.1f} s; "
            "starting another in {delay:g} s",
            index=worker.index,
            pid=worker.pid,
            status=status,
            lived=lived,
            delay=delay,
        )
        self.pending[worker.index] = self.reactor.callLater(delay, self._spawn, worker.index)

    def stopService(self) -> defer.Deferred[None]:
        """Tell every worker to stop (SIGTERM); fires once all have exited."""
        super().stopService()  # type: ignore[no-untyped-call]
        for call in self.pending.values():
            call.cancel()
        self.pending.clear()
        self.stopped = defer.Deferred()
        if not self.workers:
            self._all_gone()
            return self.stopped
        forcible = self.install_signals(self.signalled)
        log.info(
            "stopping {count} worker(s); they have {grace:g} s to finish{hint}",
            count=len(self.workers),
            grace=self.grace,
            hint="; signal again to stop now" if forcible else "",
        )
        self._send("TERM")
        self._deadline = self.reactor.callLater(self.grace + STOP_MARGIN, self._kill, "too long")
        return self.stopped

    def signalled(self, name: str) -> None:
        """A signal while stopping: the workers are told again (they drop what is left); a
        third is SIGKILL."""
        if self.stopped is None or self.stopped.called:
            return
        self.signals += 1
        if self.signals == 1:
            log.info("{name} again: telling the workers to stop at once", name=name)
            self._send("TERM")
        else:
            self._kill(f"{name} a third time")

    def _kill(self, why: str) -> None:
        if self.workers:
            log.warn("{why}: killing {count} worker(s)", why=why, count=len(self.workers))
            self._send("KILL")

    def _send(self, name: str) -> None:
        for worker in list(self.workers.values()):
            try:
                worker.transport.signalProcess(name)  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001 - it has just exited: its end is on its way
                pass

    def _all_gone(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        if self.stopped is not None and not self.stopped.called:
            self.stopped.callback(None)


def _socket_names(environ: Mapping[str, str]) -> dict[str, str]:
    """The names of the sockets systemd passed to the parent, and their count, for a worker to
    parse the same ``systemd:`` strings (Twisted took ``LISTEN_FDS`` from the parent's
    environment; the names stay)."""
    names = environ.get("LISTEN_FDNAMES", "")
    if not names:
        return {}
    return {"LISTEN_FDNAMES": names, "LISTEN_FDS": str(len(names.split(":")))}


def _install_signals(handler: Callable[[str], None]) -> bool:
    """SIGINT and SIGTERM call ``handler(name)`` from now on; False outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return False

    def on_signal(signum: int, _frame: Any) -> None:
        handler(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    return True


@dataclass(frozen=True)
class WorkerRole:
    """What a worker was told by its parent: its number, its listening descriptors, and the
    parent's pid (None when not told)."""

    index: int
    fds: tuple[int, ...]
    parent: int | None = None


def worker_role(environ: Mapping[str, str]) -> WorkerRole | None:
    """This process's role when a :class:`Supervisor` started it, else None."""
    if INDEX_VARIABLE not in environ:
        return None
    fds = tuple(int(fd) for fd in environ.get(FDS_VARIABLE, "").split(",") if fd)
    parent = environ.get(PARENT_VARIABLE)
    return WorkerRole(int(environ[INDEX_VARIABLE]), fds, int(parent) if parent else None)


def adopt_listeners(top: service.MultiService, fds: Sequence[int]) -> None:
    """Make ``top``'s stream listeners serve ``fds`` (in their order) instead of opening their
    endpoints; ValueError when the counts differ."""
    listeners = [child for child in top if isinstance(child, ListenerService)]
    if len(listeners) != len(fds):
        raise ValueError(f"{len(listeners)} listener(s) but {len(fds)} inherited socket(s)")
    for listener, fd in zip(listeners, fds, strict=True):
        listener.inherited = fd


def parent_service(top: service.MultiService, supervisor: Supervisor) -> service.MultiService:
    """The service a parent of workers runs, made of ``top`` (the service one process would
    run): ``top``'s stream listeners, bound but never accepting, whose sockets ``supervisor``
    hands to its workers; the supervisor; ``top``'s readiness notifier (systemd's
    ``Type=notify``) last, if it has one.  Stopping tells the notifier, then the workers, then
    closes the parent's copies of the sockets (the workers' copies keep them open until they
    have stopped listening)."""
    parent = service.MultiService()
    listeners = [child for child in top if isinstance(child, ListenerService)]
    others = [child for child in top if isinstance(child, ReadinessService)]
    for listener in listeners:
        listener.held = True
    supervisor.fds = lambda: [listener.port.fileno() for listener in listeners]  # type: ignore[union-attr]
    for child in [*listeners, supervisor, *others]:
        if child.parent is not None:
            child.disownServiceParent()
        child.setServiceParent(parent)
    return parent


def tag_events(publisher: Any, index: int) -> Callable[[dict[str, Any]], None]:
    """Add ``worker`` (its number) to every event of ``publisher``, and put ``worker N`` in
    front of the text log's ``[system]``; the observer added, first of all."""
    systems: dict[tuple[Any, Any], str] = {}  # the usual [system]: made once, not per event

    def tag(event: dict[str, Any]) -> None:
        if "worker" in event:
            return
        event["worker"] = index
        if system := event.get("log_system"):
            event["log_system"] = f"worker {index} {system}"
            return
        key = (event.get("log_namespace", "-"), event.get("log_level"))
        if (tagged := systems.get(key)) is None:
            if len(systems) > 1024:  # namespaces are few; bounded all the same
                systems.clear()
            tagged = systems[key] = f"worker {index} {key[0]}#{getattr(key[1], 'name', '-')}"
        event["log_system"] = tagged

    publisher.addObserver(tag)
    return tag


def become_worker(parent: int | None = None) -> None:
    """What a worker does first: a process group of its own (a terminal's Ctrl-C is for the
    parent, which forwards it), and SIGTERM when its parent dies (Linux).  ``parent``: the pid
    of the parent that started it (:data:`PARENT_VARIABLE`); a worker whose parent died while it
    was starting (its parent is then another process: init) stops at once, instead of serving
    the sockets for ever with no supervisor."""
    os.setpgid(0, 0)
    if parent is None:
        parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's signals still reach it
        pass
    if os.getppid() != parent:  # it died before now (before the request took effect)
        os.kill(os.getpid(), signal.SIGTERM)
