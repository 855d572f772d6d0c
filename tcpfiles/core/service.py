"""Twisted services shared by every behaviour: listening on an endpoint, and draining.

:class:`ListenerService` listens on a server endpoint string (binding in
``privilegedStartService``, so ports below 1024 work before twistd drops privileges), logs the
address it got, and makes a bind failure fatal to twistd.  :class:`DrainingService` stops its
listeners first, then gives open connections ``grace`` seconds to finish before dropping them.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from twisted.application import service
from twisted.internet import defer, interfaces, task
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
    "check_server_string",
    "listen_failure",
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
    unreadable or mismatched TLS files); nothing is opened."""
    proxy_endpoint(_PARSING_ONLY, description)


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
        # Parse now, so a malformed string is an error before anything starts.
        proxy_endpoint(reactor, self.description, proxy)

    def privilegedStartService(self) -> None:
        """Bind; a failure (port in use, permission) raises :class:`ListenFailed`."""
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        if self.port is not None:
            return
        endpoint = proxy_endpoint(self.reactor, self.description, self.proxy)
        outcome: list[Any] = []
        endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            raise RuntimeError(f"{self.description}: endpoints that listen later are unsupported")
        if isinstance(outcome[0], Failure):
            raise listen_failure(self.label, self.requested, outcome[0].value)
        self.port = outcome[0]
        log.info(
            "{label} listening on {address} ({security})",
            label=self.label,
            address=self.address(),
            security=self.security(),
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
