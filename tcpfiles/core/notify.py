"""Telling a service manager how the server is: ready, alive, stopping (the sd_notify protocol).

systemd starts a ``Type=notify`` service with ``$NOTIFY_SOCKET`` naming a UNIX datagram socket
(an abstract one when the name starts with ``@``) and calls the service started only when it
sends ``READY=1``; with ``WatchdogSec=`` it also sets ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``,
the process meant) and restarts a service that sends no ``WATCHDOG=1`` for that long.  A message
is a few ``KEY=VALUE`` lines in one datagram (sd_notify(3)): no library is needed.

:class:`ReadinessService`, the last child of the server's top service, sends ``READY=1`` with a
``STATUS=`` naming where each behaviour listens once every listener is bound and the reactor
runs, ``WATCHDOG=1`` every half interval while serving, and ``STOPPING=1`` when the stop
begins.  Without ``$NOTIFY_SOCKET`` there is none (:meth:`ReadinessService.from_environ`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from tcpfiles.core.service import ListenerService
from tcpfiles.core.udp import UDPListenerService

log = Logger(namespace="tcpfiles.core.notify")

#: Sends one datagram to an address (a path, or a NUL-prefixed abstract name); raises OSError.
Send = Callable[[bytes, bytes], None]


__all__ = [
    "Notifier",
    "ReadinessService",
    "describe_listeners",
    "send_datagram",
    "socket_address",
    "watchdog_interval",
]


def socket_address(name: str) -> bytes:
    """The address ``$NOTIFY_SOCKET`` names: a path, or an abstract name (``@name``).
    ValueError for anything else (systemd's ``vsock:`` addresses, for one)."""
    if name.startswith("@") and len(name) > 1:
        return b"\0" + os.fsencode(name[1:])
    if name.startswith("/"):
        return os.fsencode(name)
    raise ValueError(f"NOTIFY_SOCKET={name!r} is neither a path nor an abstract socket (@name)")


def send_datagram(address: bytes, message: bytes) -> None:
    """One datagram on a socket of its own, without ever blocking (a full queue is an error)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.sendto(message, address)


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3)
    advises; None when no watchdog is asked for, or it is meant for another process."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
        owner = int(environ.get("WATCHDOG_PID") or pid)
    except ValueError:
        return None
    if usec <= 0 or owner != pid:
        return None
    return usec / 2e6


class Notifier:
    """Sends sd_notify messages to one address.  Failing to send is logged (once, until a send
    succeeds again), never raised: the service manager's trouble does not stop the server."""

    def __init__(self, name: str, send: Send = send_datagram) -> None:
        self.name = name  # as $NOTIFY_SOCKET gave it
        self.address = socket_address(name)
        self._send = send
        self._failing = False

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``"READY=1"``, ``"STATUS=..."``) as one message; whether it went."""
        message = "\n".join(line.replace("\n", " ") for line in lines).encode("utf-8")
        try:
            self._send(self.address, message)
        except OSError as exc:
            if not self._failing:
                log.warn(
                    "cannot notify the service manager at {name}: {reason}",
                    name=self.name,
                    reason=exc.strerror or exc,
                )
            self._failing = True
            return False
        self._failing = False
        return True


def describe_listeners(services: Iterable[Any]) -> str:
    """``serving files on 127.0.0.1:8888; chat on 0.0.0.0:9000``: the bound listeners among
    ``services``, by label, in order."""
    where: dict[str, list[str]] = {}
    for child in services:
        if isinstance(child, ListenerService) and child.port is not None:
            where.setdefault(child.label, []).append(child.address())
        elif isinstance(child, UDPListenerService) and child.port is not None:
            host = child.port.getHost()
            where.setdefault(child.label, []).append(f"udp {host.host}:{host.port}")
    if not where:
        return "serving nothing"
    return "serving " + "; ".join(f"{label} on {', '.join(at)}" for label, at in where.items())


class ReadinessService(service.Service):
    """Tells the service manager how the service it belongs to is (add it last to that service).

    Started, it waits one reactor turn (every sibling has started by then, each listener bound,
    and the reactor runs) and sends ``READY=1`` with a ``STATUS=`` naming the listeners, then
    ``WATCHDOG=1`` every ``watchdog`` seconds when given.  Stopped (first of its siblings, as a
    MultiService stops its children last to first), it stops pinging, as systemd stops watching
    once a service is stopping, and sends ``STOPPING=1`` while the connections drain.
    """

    def __init__(self, notifier: Notifier, reactor: Any, watchdog: float | None = None) -> None:
        self.notifier = notifier
        self.reactor = reactor
        self.watchdog = watchdog
        self._pending: Any = None
        self._pinging: task.LoopingCall | None = None

    @classmethod
    def from_environ(
        cls, reactor: Any, environ: Mapping[str, str] | None = None, pid: int | None = None
    ) -> ReadinessService | None:
        """The service ``environ`` (the process's by default) asks for, or None when it names no
        notification socket (or one that is not a UNIX socket: logged)."""
        environ = os.environ if environ is None else environ
        name = environ.get("NOTIFY_SOCKET")
        if not name:
            return None
        try:
            notifier = Notifier(name)
        except ValueError as exc:
            log.warn("not notifying the service manager: {reason}", reason=str(exc))
            return None
        return cls(
            notifier, reactor, watchdog_interval(environ, os.getpid() if pid is None else pid)
        )

    def startService(self) -> None:
        """READY=1 on the next reactor turn, once the siblings started after nothing failed."""
        super().startService()  # type: ignore[no-untyped-call]
        self._pending = self.reactor.callLater(0, self._ready)

    def _ready(self) -> None:
        self._pending = None
        self.notifier.notify("READY=1", f"STATUS={describe_listeners(self.parent or ())}")
        if self.watchdog is not None:
            self._pinging = task.LoopingCall(self.notifier.notify, "WATCHDOG=1")
            self._pinging.clock = self.reactor
            self._pinging.start(self.watchdog, now=True)

    def stopService(self) -> None:
        """No more pings; STOPPING=1, with how many connections may take how long to finish."""
        super().stopService()  # type: ignore[no-untyped-call]
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self._pinging is not None and self._pinging.running:
            self._pinging.stop()
        self._pinging = None
        self.notifier.notify("STOPPING=1", f"STATUS={self._stopping_status()}")

    def _stopping_status(self) -> str:
        trackers = getattr(self.parent, "trackers", ())
        busy = sum(len(tracker.active) for tracker in trackers)
        grace = getattr(self.parent, "grace", None)
        if not busy or grace is None:
            return "stopping"
        return f"stopping: {busy} connection(s) may take up to {grace:g} s to finish"
