"""A connection to a files server that is made again when it is lost mid-operation: the retries
of :mod:`tcpfiles.files.transfer` (which re-exports :class:`Session`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet import defer, error, task

from tcpfiles.files.client import (
    ConnectionClosed,
    FilesClient,
    RemoteError,
    TLSFailure,
    WrongServer,
    connect,
)

__all__ = ["Session"]


class Session:
    """A connection to a files server that is made again when it is lost mid-operation."""

    def __init__(
        self,
        reactor: Any,
        server: str,
        retry_for: float = 60.0,
        timeout: float | None = 30.0,
        on_notice: Callable[[str], None] | None = None,
        policy: Callable[[int], float] | None = None,
        connector: Callable[[], defer.Deferred[FilesClient]] | None = None,
        ca: str | None = None,
        insecure: bool = False,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.reactor = reactor
        self.server = server
        self.retry_for = retry_for
        self.timeout = timeout
        self.on_notice = on_notice or (lambda message: None)
        self.policy = policy or backoffPolicy(initialDelay=0.5, maxDelay=10.0)
        self._connect = connector or (
            lambda: connect(reactor, server, timeout, ca=ca, insecure=insecure)
        )
        self._client: FilesClient | None = None
        self.connected_once = False
        self.credentials = credentials

    @defer.inlineCallbacks
    def client(self) -> Any:
        """The current connection, made if there is none."""
        if self._client is None or self._client.protocol.closed:
            client = yield self._connect()
            if self.credentials is not None:
                try:  # on every connection, also after a loss
                    yield client.login(*self.credentials)
                except BaseException:
                    client.close()  # a refused (or busy) login must not leave it open
                    raise
            self._client = client
            self.connected_once = True
        return self._client

    @defer.inlineCallbacks
    def run(self, operation: Callable[[FilesClient, bool], defer.Deferred[Any]]) -> Any:
        """``operation(client, retried)``, again on a new connection after a loss or ``busy``.

        The first connection failing is reported at once (a wrong address should not wait a
        minute); after that, attempts go on for ``retry_for`` seconds from the first failure.
        """
        failures = 0
        deadline: float | None = None
        while True:
            try:
                client = yield self.client()
                return (yield operation(client, failures > 0))
            except (ConnectionClosed, error.ConnectError, error.DNSLookupError, RemoteError) as exc:
                if isinstance(exc, RemoteError) and exc.code != "busy":
                    raise
                if isinstance(exc, TLSFailure | WrongServer):  # it would fail the same way again
                    raise
                if not self.connected_once:
                    raise
                self.close()  # busy or lost: start again on a new connection, this one closed
                failures += 1
                now = self.reactor.seconds()
                deadline = deadline if deadline is not None else now + self.retry_for
                delay = self.policy(failures)
                if now + delay > deadline:
                    raise
                self.on_notice(f"{_why(exc)}; retrying in {delay:.1f} s")
                yield task.deferLater(self.reactor, delay, lambda: None)

    def close(self) -> None:
        """Close the connection, if any."""
        if self._client is not None and not self._client.protocol.closed:
            self._client.close()
        self._client = None


def _why(exc: BaseException) -> str:
    if isinstance(exc, RemoteError):
        return f"server busy ({exc.text})"
    if isinstance(exc, error.ConnectionRefusedError):
        return "server not reachable (connection refused)"
    return str(exc) or type(exc).__name__
