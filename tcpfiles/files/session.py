"""A connection to a files server that is made again when it is lost mid-operation: the retries
of :mod:`tcpfiles.files.transfer` (which re-exports :class:`Session`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.internet import backoffPolicy
from twisted.internet import defer, error, interfaces, task

from tcpfiles.files.client import (
    CannotConnect,
    ConnectionClosed,
    FilesClient,
    RemoteError,
    TLSFailure,
    WrongServer,
    connect,
)

__all__ = ["Session"]

_T = TypeVar("_T")
#: What a retry may cure: a lost connection, one that could not be made, a busy server.  (Also
#: Twisted's own connection errors, from a ``connector`` that does not use :func:`connect`.)
_RETRYABLE = (
    CannotConnect,
    ConnectionClosed,
    RemoteError,
    error.ConnectError,
    error.DNSLookupError,
)


class Session:
    """A connection to a files server that is made again when it is lost mid-operation.

    ``server`` is what :func:`~tcpfiles.files.client.connect` takes (a string or an endpoint),
    connected with ``timeout``, ``ca`` and ``insecure``, or ``connector()`` makes the connection
    instead.  ``credentials`` ``(user, password)`` log in on every connection.  ``policy(n)`` is
    the delay before the ``n``-th retry (capped exponential backoff with jitter by default);
    ``on_notice(message)`` hears of each retry (``"connection closed: ...; retrying in 2.0 s"``).
    """

    def __init__(
        self,
        reactor: Any,
        server: str | interfaces.IStreamClientEndpoint,
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

    def client(self) -> defer.Deferred[FilesClient]:
        """The current connection, made (and logged in) if there is none."""
        return defer.Deferred.fromCoroutine(self._current())

    async def _current(self) -> FilesClient:
        if self._client is None or self._client.protocol.closed:
            client = await self._connect()
            if self.credentials is not None:
                try:  # on every connection, also after a loss
                    await client.login(*self.credentials)
                except BaseException:
                    client.close()  # a refused (or busy) login must not leave it open
                    raise
            self._client = client
            self.connected_once = True
        return self._client

    def run(
        self, operation: Callable[[FilesClient, bool], defer.Deferred[_T]]
    ) -> defer.Deferred[_T]:
        """``operation(client, retried)``, again on a new connection after a loss or ``busy``.

        Retried: :class:`~tcpfiles.files.client.ConnectionClosed` (not its ``WrongServer`` and
        ``TLSFailure``), :class:`~tcpfiles.files.client.CannotConnect` and ``RemoteError`` with
        code ``busy``; anything else fails at once.  The first connection failing is reported at
        once (a wrong address should not wait a minute); after that, attempts go on for
        ``retry_for`` seconds from the first failure, and the last failure is raised.
        """
        return defer.Deferred.fromCoroutine(self._run(operation))

    async def _run(self, operation: Callable[[FilesClient, bool], defer.Deferred[_T]]) -> _T:
        failures = 0
        deadline: float | None = None
        while True:
            try:
                client = await self.client()
                return await operation(client, failures > 0)
            except _RETRYABLE as exc:
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
                await task.deferLater(self.reactor, delay, lambda: None)

    def close(self) -> None:
        """Close the connection, if any."""
        if self._client is not None and not self._client.protocol.closed:
            self._client.close()
        self._client = None


def _why(exc: BaseException) -> str:
    if isinstance(exc, CannotConnect):
        exc = exc.cause
    if isinstance(exc, RemoteError):
        return f"server busy ({exc.text})"
    if isinstance(exc, error.ConnectionRefusedError):
        return "server not reachable (connection refused)"
    return str(exc) or type(exc).__name__
