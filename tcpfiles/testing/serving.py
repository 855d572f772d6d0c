"""Serving behaviours for real, on loopback, with the real reactor: for end-to-end tests.

:func:`serve` composes the server as ``twistd tcpfiles`` does
(:func:`tcpfiles.compose.make_service`) with every behaviour on ``127.0.0.1:0``, and starts it:
the ports are bound when it returns.
:meth:`Served.stop` closes the listeners and drains the connections (a Deferred), as on SIGTERM.
In a trial ``TestCase`` (``reactor`` is the one trial runs; docs/testing.md has whole examples)::

    class ReverseTests(TestCase):
        async def test_answers(self):
            served = serve(reactor, [reverse])
            self.addCleanup(served.stop)
            client = await LineClient.connect(reactor, served.port)
            self.addCleanup(client.close)
            client.send_line(b"hello")
            self.assertEqual(await client.line(), b"olleh")
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from tcpfiles.compose import Serve, find, make_service
from tcpfiles.core.fdlimit import FdLimitCheck
from tcpfiles.core.notify import ReadinessService
from tcpfiles.core.plugin import is_datagram
from tcpfiles.core.service import DrainingService, ListenerService
from tcpfiles.core.tls import server_endpoint
from tcpfiles.core.udp import UDPListenerService
from tcpfiles.tree.paths import Root

#: Where a stream behaviour is served unless told: a free port on the loopback interface.
LOOPBACK = "tcp:0:interface=127.0.0.1"
#: The same for a datagram behaviour.
LOOPBACK_UDP = "udp:0:interface=127.0.0.1"


class Served:
    """A composed server that :func:`serve` started: its ports, and :meth:`stop`.

    ``ports`` maps each behaviour's name to the port numbers it listens on, in the order of its
    endpoints (UDP ones too); ``service`` is the ``DrainingService`` itself; ``root`` the
    directory served (a temporary one, removed on stop, unless one was given).
    """

    def __init__(self, service: DrainingService, root: str, temporary: bool) -> None:
        self.service = service
        self.root = root
        self._temporary = temporary
        self._waiters: list[defer.Deferred[None]] = []
        self._outcome: list[Failure | None] = []  # once stopped
        self.ports: dict[str, list[int]] = {}
        for child in service:
            if isinstance(child, ListenerService | UDPListenerService) and child.port is not None:
                host = child.port.getHost()
                if hasattr(host, "port"):  # not a UNIX socket
                    self.ports.setdefault(child.label, []).append(host.port)

    @property
    def port(self) -> int:
        """The port of the first listener: the one port when one behaviour is served."""
        for ports in self.ports.values():
            return ports[0]
        raise ValueError("nothing is listening on a port")

    def port_of(self, name: str, index: int = 0) -> int:
        """The port behaviour ``name`` listens on (its ``index``-th endpoint)."""
        if name not in self.ports:
            raise KeyError(f"{name} listens on no port (serving: {', '.join(self.ports)})")
        return self.ports[name][index]

    def stop(self) -> defer.Deferred[None]:
        """Stop as on SIGTERM: close the listeners, ask each connection to finish (drain) and
        drop what is left after the grace period; then remove a temporary root.  Fires when
        all is done (every call, also after the first, with the same outcome)."""
        waiter: defer.Deferred[None] = defer.Deferred()
        if self._outcome:
            waiter.callback(self._outcome[0])
            return waiter
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            defer.maybeDeferred(self.service.stopService).addBoth(self._stopped)
        return waiter

    def _stopped(self, outcome: Any) -> None:
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)
        self._outcome.append(outcome if isinstance(outcome, Failure) else None)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(self._outcome[0])


def serve(
    reactor: Any,
    serving: Iterable[Serve | str | Any],
    root: str | os.PathLike[str] | Root | None = None,
    *,
    grace: float = 5.0,
    **settings: Any,
) -> Served:
    """Serve each of ``serving`` on the real ``reactor``, as ``twistd tcpfiles`` would, on
    free loopback ports; started: its listeners are bound when this returns.

    ``serving``: behaviours by name or object, or :class:`~tcpfiles.compose.Serve` entries
    (their own options; endpoints None means a free loopback port, :data:`LOOPBACK`, not the
    behaviour's default port).  ``root``: the directory served; by default a new empty
    temporary one, removed by :meth:`Served.stop`.  ``grace`` and the other ``settings``
    (``writable``, ``checkers``, ``users``, ``anonymous``, ``max_upload``, ``tls``) as for
    :func:`~tcpfiles.compose.make_service`; with ``tls=(cert, key)`` the free loopback ports
    of stream behaviours are TLS ones, as its default endpoints would be.

    The descriptor check that a server makes at start is left out: it would raise the test
    process's descriptor limit; so is telling a service manager (``$NOTIFY_SOCKET``) that it is
    ready: the test process is not the service it manages.  Always stop it
    (``self.addCleanup(served.stop)``) so that no port is left open.
    """
    temporary = root is None
    if root is None:
        root = tempfile.mkdtemp(prefix="tcpfiles-test-")
    path = root.path if isinstance(root, Root) else os.fspath(root)
    top = None
    try:
        entries = [_on_loopback(entry, settings.get("tls")) for entry in serving]
        given = root if isinstance(root, Root) else path
        top = make_service(reactor, given, entries, grace=grace, **settings)
        for child in list(top):
            if isinstance(child, FdLimitCheck | ReadinessService):
                top.removeService(child)  # type: ignore[no-untyped-call]
        top.privilegedStartService()  # type: ignore[no-untyped-call]
        top.startService()  # type: ignore[no-untyped-call]
    except BaseException:
        _close_listeners(top)
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
        raise
    return Served(top, path, temporary)


def _close_listeners(top: DrainingService | None) -> None:
    """After a failed start: close what was bound before the failure."""
    for child in top or ():
        if isinstance(child, ListenerService | UDPListenerService) and child.port is not None:
            defer.maybeDeferred(child.stopService).addErrback(lambda _: None)


def _on_loopback(entry: Serve | str | Any, tls: tuple[str, str] | None) -> Serve:
    """``entry`` as a Serve whose unspecified endpoints are a free loopback port (TLS for a
    stream behaviour when ``tls`` is given)."""
    if not isinstance(entry, Serve):
        entry = Serve(entry)
    if entry.endpoints is not None:
        return entry
    behaviour = find(entry.behaviour) if isinstance(entry.behaviour, str) else entry.behaviour
    if is_datagram(behaviour):
        return replace(entry, endpoints=[LOOPBACK_UDP])
    endpoint = LOOPBACK if tls is None else server_endpoint(LOOPBACK, *tls)
    return replace(entry, endpoints=[endpoint])
