"""Twisted services shared by every behaviour: listening on an endpoint, and draining.

:class:`ListenerService` listens on a server endpoint string (binding in
``privilegedStartService``, so ports below 1024 work before twistd drops privileges), logs the
address it got, and makes a bind failure fatal to twistd.  :class:`DrainingService` stops its
listeners first, then gives open connections ``grace`` seconds to finish before dropping them.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Mapping
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints, interfaces, task
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcpfiles.core.connections import ConnectionTracker
from tcpfiles.core.proxy import DEFAULT_SETTINGS, ProxySettings
from tcpfiles.core.proxyendpoint import is_proxy_endpoint, proxy_endpoint

__all__ = [
    "DEFAULT_BACKLOG",
    "DrainingService",
    "ListenFailed",
    "ListenerService",
    "adopt_port",
    "check_server_string",
    "hold",
    "listen_failure",
    "systemd_failure",
    "with_backlog",
]

log = Logger(namespace="tcpfiles.core.service")

#: Listen queue for TCP endpoints that do not name one: with Twisted's default of 50, a burst of
#: 100 connects sees one-second SYN retries.
DEFAULT_BACKLOG = 511


class ListenFailed(Exception):
    """A listener could not start; the message is one line for the operator."""


def listen_failure(label: str, description: str, exc: object) -> ListenFailed:
    """``files: cannot listen on tcp:8888: Address already in use``, from a failure to listen."""
    cause = getattr(exc, "socketError", None) or exc
    reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
    return ListenFailed(f"{label}: cannot listen on {description}: {reason}")


#: What endpoint strings are parsed with when only their syntax (and TLS files) is checked:
#: the parsers store the reactor and use it only to listen, so none is needed, and library code
#: never takes the global one.
_PARSING_ONLY: Any = object()


def check_server_string(description: str) -> None:
    """Raise if ``description`` is not a server endpoint string that could listen (bad syntax,
    unreadable or mismatched TLS files; for a ``systemd:`` socket that systemd did not pass, a
    ValueError that says why); nothing is opened."""
    try:
        proxy_endpoint(_PARSING_ONLY, description)
    except (IndexError, KeyError):
        if "systemd" not in description.lower().split(":", 2)[:2]:  # systemd:, haproxy:systemd:
            raise
        raise ValueError(systemd_failure(os.environ)) from None


def systemd_failure(environ: Mapping[str, str], first: int = 3) -> str:
    """Why a ``systemd:`` endpoint found no socket (Twisted says "list index out of range").

    Twisted reads ``LISTEN_FDS`` (and removes it) when ``twisted.internet.endpoints`` is
    imported, and ignores it unless ``LISTEN_FDNAMES`` names each socket: a listening socket at
    descriptor 3 with no names is that case.
    """
    names = environ.get("LISTEN_FDNAMES", "")
    if not names and _listening(first):
        return (
            "systemd passed a socket (descriptor 3) without its name (LISTEN_FDNAMES), and "
            "Twisted finds sockets only by their names: use systemd 227 or later (the socket "
            "unit's FileDescriptorName=), or systemd-socket-activate --fdname=NAME"
        )
    return (
        f"no such socket among those systemd passed (names: {names.replace(':', ', ') or 'none'}); "
        "systemd passes them from a socket unit (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES)"
    )


def _listening(fd: int) -> bool:
    """Whether ``fd`` is a listening socket."""
    try:
        probe = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        return bool(probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False
    finally:
        probe.detach()


def with_backlog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """Add ``backlog=`` to a tcp/tcp6/ssl endpoint string (also behind ``haproxy:``) that does
    not set one."""
    if is_proxy_endpoint(description):
        head, _, inner = description.partition(":")
        return f"{head}:{with_backlog(inner, backlog)}"
    kind = description.split(":", 1)[0].lower()
    if kind in ("tcp", "tcp6", "ssl") and "backlog=" not in description:
        return f"{description}:backlog={backlog}"
    return description


class ListenerService(service.Service):
    """Listen with ``factory`` on a Twisted server endpoint string while running; a
    ``haproxy:`` one reads PROXY headers from the balancers ``proxy`` allows
    (:mod:`tcpfiles.core.proxy`)."""

    def __init__(
        self,
        description: str,
        factory: Factory,
        reactor: Any,
        label: str,
        proxy: ProxySettings = DEFAULT_SETTINGS,
    ) -> None:
        self.requested = description  # as given: what messages show
        self.description = with_backlog(description)
        self.factory = factory
        self.reactor = reactor
        self.label = label
        self.proxy = proxy
        self.port: interfaces.IListeningPort | None = None
        #: A listening socket handed down by a parent process (``--workers``): served instead
        #: of opening the endpoint (:func:`tcpfiles.core.workers.adopt_listeners` sets it).
        self.inherited: int | None = None
        #: In a parent of workers: bind, but never accept (the workers do).
        self.held = False
        # Parse now, so a malformed string is an error before anything starts.
        proxy_endpoint(reactor, self.description, proxy)

    def privilegedStartService(self) -> None:
        """Bind; a failure (port in use, permission) raises :class:`ListenFailed`."""
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        if self.port is not None:
            return
        outcome: list[Any] = []
        self._listen().addBoth(outcome.append)
        if not outcome:
            raise RuntimeError(f"{self.description}: endpoints that listen later are unsupported")
        if isinstance(outcome[0], Failure):
            raise listen_failure(self.label, self.requested, outcome[0].value)
        self.port = outcome[0]
        if self.held:
            hold(self.port)
        log.info(
            "{label} listening on {address} ({security})",
            label=self.label,
            address=self.address(),
            security=self.security(),
        )

    def _listen(self) -> defer.Deferred[Any]:
        """Open the endpoint, or serve the inherited socket as the endpoint would."""
        if self.inherited is None:
            endpoint = proxy_endpoint(self.reactor, self.description, self.proxy)
            return endpoint.listen(self.factory)
        return defer.maybeDeferred(
            adopt_port, self.reactor, self.description, self.inherited, self.factory, self.proxy
        )

    def security(self) -> str:
        """``TLS`` for an ``ssl:`` endpoint, else what carries the bytes in the clear; behind
        ``haproxy:``, the same after ``PROXY header, then``."""
        if is_proxy_endpoint(self.description):
            inner = self.description.split(":", 1)[1]
            return f"PROXY header, then {_security(inner)}"
        return _security(self.description)

    def startService(self) -> None:
        """Bind, unless twistd already did it in the privileged phase."""
        if self.port is None:
            self.privilegedStartService()
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> defer.Deferred[None]:
        """Stop listening (connections already accepted are left alone)."""
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        if port is None:
            return defer.succeed(None)
        address = _address(port)

        def stopped(_: object) -> None:
            log.info("{label} stopped listening on {address}", label=self.label, address=address)

        return defer.maybeDeferred(port.stopListening).addCallback(stopped)

    def address(self) -> str:
        """Where we listen, as text (``127.0.0.1:8888``), or empty when not listening."""
        return _address(self.port) if self.port is not None else ""


def adopt_port(
    reactor: Any,
    description: str,
    fd: int,
    factory: Factory,
    proxy: ProxySettings = DEFAULT_SETTINGS,
) -> Any:
    """Serve ``factory`` on the listening socket ``fd`` as the endpoint ``description`` would
    serve it: with the same PROXY layer (``haproxy:``, outermost, trusting what ``proxy``
    allows) and TLS (``ssl:``, beneath the PROXY layer) around the factory.  The socket's
    family is the socket's own; ``fd`` is closed (the port has its own copy)."""
    endpoint: Any = proxy_endpoint(reactor, description, proxy)
    wrapped: Any = factory
    if isinstance(endpoint, endpoints.SSL4ServerEndpoint):  # as reactor.listenSSL wraps it
        from twisted.protocols.tls import TLSMemoryBIOFactory

        wrapped = TLSMemoryBIOFactory(endpoint._sslContextFactory, False, wrapped)
    # What the endpoint listens with: for haproxy:, a reactor that adds the PROXY layer.
    listener = getattr(endpoint, "_reactor", None) or endpoint.reactor
    probe = socket.socket(fileno=fd)  # the family, as the kernel knows it
    family = probe.family
    probe.detach()
    port = listener.adoptStreamPort(fd, family, wrapped)
    os.close(fd)
    return port


def hold(port: Any) -> None:
    """A bound port that a parent keeps for its workers: not accepting, and closed without
    ``shutdown()`` (which would stop every process's accepting on the shared socket)."""
    port.stopReading()
    port._shouldShutdown = False


def _security(description: str) -> str:
    kind = description.split(":", 1)[0].lower()
    if kind == "ssl":
        return "TLS"
    return {"tcp": "plain TCP", "tcp6": "plain TCP", "unix": "UNIX socket"}.get(
        kind, f"{kind}: endpoint"
    )


def _address(port: interfaces.IListeningPort) -> str:
    host = port.getHost()
    if hasattr(host, "port"):
        return f"{host.host}:{host.port}"  # type: ignore[attr-defined]
    name = getattr(host, "name", host)
    return name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else str(name)


class DrainingService(service.MultiService):
    """Listeners as children; on stop: close them, drain the trackers within ``grace`` seconds.

    With ``second_signal_forces`` (what twistd gets), a SIGINT or SIGTERM that arrives while
    connections are draining ends the grace period at once, instead of Twisted's
    ``ReactorNotRunning`` traceback: the usual "press Ctrl-C again to stop now".
    """

    def __init__(
        self,
        trackers: list[ConnectionTracker],
        grace: float,
        reactor: Any,
        second_signal_forces: bool = False,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.trackers = trackers
        self.grace = grace
        self.reactor = reactor
        self.second_signal_forces = second_signal_forces

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """Listeners first, then finish or drop the connections, then done."""
        yield super().stopService()  # type: ignore[no-untyped-call]
        busy = sum(len(t.active) for t in self.trackers)
        finished: defer.Deferred[bool | str] = defer.Deferred()

        def settle(outcome: bool | str) -> None:
            """True: all drained; a str: why the rest is being dropped."""
            if not finished.called:
                finished.callback(outcome)

        forcible = self.second_signal_forces and self._force_on_signal(settle)
        if busy:
            log.info(
                "waiting up to {grace:g} s for {count} connection(s) to finish{hint}",
                grace=self.grace,
                count=busy,
                hint="; signal again to stop now" if forcible else "",
            )
        idle = defer.gatherResults([t.drain() for t in self.trackers], consumeErrors=True)
        idle.addBoth(lambda _: settle(True))
        timer = self.reactor.callLater(self.grace, settle, "grace period over")
        drained = yield finished
        if timer.active():
            timer.cancel()
        if drained is not True:
            left = sum(len(t.active) for t in self.trackers)
            log.warn("{why}: dropping {count} connection(s)", why=drained, count=left)
            for tracker in self.trackers:
                tracker.abort_all()
            # abortConnection delivers connectionLost on the next turn: let it run.
            yield task.deferLater(self.reactor, 0, lambda: None)

    def _force_on_signal(self, settle: Any) -> bool:
        """From now on SIGINT/SIGTERM end the grace period; False if we cannot own signals.

        The handler stays until the process ends: putting Twisted's back would make a signal
        that arrives during the last steps of shutdown log ``ReactorNotRunning`` again.
        """
        if threading.current_thread() is not threading.main_thread():
            return False

        def handler(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            self.reactor.callFromThread(settle, f"{name} again")

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)
        return True
