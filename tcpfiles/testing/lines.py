"""Line clients for end-to-end tests: connect to ``127.0.0.1:PORT``, send lines, read lines.

:class:`LineClient` runs on the reactor (its reads are Deferreds with a timeout), for trial
``TestCase`` methods and ``async def`` tests; :class:`BlockingLineClient` is a plain socket, for
a ``SynchronousTestCase`` talking to a server in another process (a ``twistd`` started by the
test).  Never use the blocking one against a server on the test's own reactor: the reactor does
not run while the test waits on the socket.
"""

from __future__ import annotations

import socket
from collections import deque
from typing import Any, TypeVar

from twisted.internet import defer, endpoints
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

T = TypeVar("T")

#: Seconds a read waits for its line (or the end) unless told.
TIMEOUT = 10.0


class LineClient(Protocol):
    """A connection to a line server: :meth:`send_line`, :meth:`line` (a Deferred that
    fails with ``TimeoutError`` after ``timeout`` seconds, and ``EOFError`` when the server
    closes first), :meth:`rest` (everything until it closes), :meth:`end_input` (half-close),
    :meth:`close`.  Make one with :meth:`connect`::

        client = await LineClient.connect(reactor, served.port)
        self.addCleanup(client.close)
        client.send_line(b"hello")
        self.assertEqual(await client.line(), b"olleh")
    """

    transport: Any

    def __init__(self, reactor: Any, delimiter: bytes = b"\n", timeout: float = TIMEOUT) -> None:
        self.reactor = reactor
        self.delimiter = delimiter
        self.timeout = timeout
        #: Every byte received, lines read or not.
        self.received = b""
        self._buffer = b""
        self._lines: deque[bytes] = deque()
        self._waiting: deque[defer.Deferred[bytes]] = deque()
        self._ended = False  # the server sent all it will send
        self._lost: defer.Deferred[None] = defer.Deferred()
        self.connected_once = False

    @classmethod
    def connect(
        cls,
        reactor: Any,
        port: int,
        host: str = "127.0.0.1",
        *,
        delimiter: bytes = b"\n",
        timeout: float = TIMEOUT,
    ) -> defer.Deferred[LineClient]:
        """Connect to ``host:port`` over TCP (within ``timeout`` seconds, which is also each
        read's timeout unless it names its own); fires with the connected client."""
        endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
        client = cls(reactor, delimiter, timeout)
        connected: defer.Deferred[LineClient]
        connected = endpoints.connectProtocol(endpoint, client)
        return connected

    # --- what the test does ------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send raw bytes."""
        self.transport.write(data)

    def send_line(self, line: bytes) -> None:
        """Send one line (the delimiter is added)."""
        self.transport.write(line + self.delimiter)

    def line(self, timeout: float | None = None) -> defer.Deferred[bytes]:
        """The next line, without its delimiter."""
        if self._lines:
            return defer.succeed(self._lines.popleft())
        if self._ended:
            return defer.fail(EOFError(self._describe("the server closed")))
        waiter: defer.Deferred[bytes] = defer.Deferred(self._waiting.remove)
        self._waiting.append(waiter)
        return self._bounded(waiter, timeout, "no line")

    def lines(self, count: int, timeout: float | None = None) -> defer.Deferred[list[bytes]]:
        """The next ``count`` lines (each within ``timeout``)."""

        async def read() -> list[bytes]:
            return [await self.line(timeout) for _ in range(count)]

        return defer.ensureDeferred(read())

    def rest(self, timeout: float | None = None) -> defer.Deferred[bytes]:
        """Everything not read as a line yet, once the server has closed (or half-closed)."""

        def unread(_: object) -> bytes:
            data = b"".join(line + self.delimiter for line in self._lines) + self._buffer
            self._lines.clear()
            self._buffer = b""
            return data

        ended = defer.succeed(None) if self._ended else self.closed()
        return self._bounded(ended, timeout, "the server did not close").addCallback(unread)

    def end_input(self) -> None:
        """Half-close: tell the server we send nothing more (``shutdown(SHUT_WR)``)."""
        self.transport.loseWriteConnection()

    def close(self) -> defer.Deferred[None]:
        """Close the connection; fires once it is closed (use it as a test cleanup)."""
        if not self._lost.called:
            self.transport.loseConnection()
        return self.closed()

    def closed(self, timeout: float | None = None) -> defer.Deferred[None]:
        """Fires when the connection is closed (by either side)."""
        waiter: defer.Deferred[None] = defer.Deferred()

        def lost(result: object) -> object:
            if not waiter.called:  # not given up on (timed out)
                waiter.callback(None)
            return result

        self._lost.addBoth(lost)
        return waiter if timeout is None else self._bounded(waiter, timeout, "still open")

    # --- the protocol ----------------------------------------------------------------------

    def connectionMade(self) -> None:
        """Connected."""
        self.connected_once = True

    def dataReceived(self, data: bytes) -> None:
        """Split into lines; each goes to the oldest read waiting, or waits for one."""
        self.received += data
        self._buffer += data
        while self.delimiter in self._buffer:
            line, _, self._buffer = self._buffer.partition(self.delimiter)
            if self._waiting:
                self._waiting.popleft().callback(line)
            else:
                self._lines.append(line)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Closed: reads waiting fail with EOFError."""
        self._end()
        if not self._lost.called:
            self._lost.callback(None)

    # --- inside ------------------------------------------------------------------------------

    def _end(self) -> None:
        self._ended = True
        waiting, self._waiting = self._waiting, deque()
        for waiter in waiting:
            waiter.errback(EOFError(self._describe("the server closed")))

    def _bounded(self, d: defer.Deferred[T], timeout: float | None, what: str) -> defer.Deferred[T]:
        seconds = self.timeout if timeout is None else timeout

        def timed_out(result: Any, _timeout: float) -> Any:
            if isinstance(result, Failure) and isinstance(result.value, defer.CancelledError):
                raise TimeoutError(self._describe(f"{what} within {seconds:g} s"))
            return result

        return d.addTimeout(seconds, self.reactor, onTimeoutCancel=timed_out)

    def _describe(self, what: str) -> str:
        return f"{what}; unread: {self._buffer[:200]!r}, received: {len(self.received)} bytes"


class BlockingLineClient:
    """The same moves on a plain blocking socket, for a server in another process; each read
    raises ``TimeoutError`` after ``timeout`` seconds and ``EOFError`` when the server closes
    first.  A context manager that closes the socket::

        with BlockingLineClient(port) as client:
            client.send_line(b"hello")
            assert client.line() == b"olleh"
    """

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        delimiter: bytes = b"\n",
        timeout: float = TIMEOUT,
    ) -> None:
        self.delimiter = delimiter
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""
        self._ended = False

    def __enter__(self) -> BlockingLineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        """Send raw bytes."""
        self.sock.sendall(data)

    def send_line(self, line: bytes) -> None:
        """Send one line (the delimiter is added)."""
        self.sock.sendall(line + self.delimiter)

    def line(self, timeout: float | None = None) -> bytes:
        """The next line, without its delimiter."""
        while self.delimiter not in self._buffer:
            if not self._fill(timeout):
                raise EOFError(f"the server closed; unread: {self._buffer[:200]!r}")
        line, _, self._buffer = self._buffer.partition(self.delimiter)
        return line

    def rest(self, timeout: float | None = None) -> bytes:
        """Everything not read yet, once the server has closed."""
        while self._fill(timeout):
            pass
        data, self._buffer = self._buffer, b""
        return data

    def end_input(self) -> None:
        """Half-close: tell the server we send nothing more."""
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def _fill(self, timeout: float | None) -> bool:
        """Read what is there (waiting up to ``timeout``); False at the end."""
        if self._ended:
            return False
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            chunk = self.sock.recv(1 << 16)
        except TimeoutError:
            raise TimeoutError(
                f"nothing within the timeout; unread: {self._buffer[:200]!r}"
            ) from None
        if not chunk:
            self._ended = True
            return False
        self._buffer += chunk
        return True
