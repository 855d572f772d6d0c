"""The chat bus on Redis (``--chat-bus redis://HOST:PORT/DB``), with txredisapi.

Needs the ``redis`` extra (``pip install 'tcpfiles[redis]'``), imported when a bus is made:
txredisapi imports the global reactor, which a library module must not do by being imported
(twistd has installed its own by then).  Two connections: one subscribed to the room's
channel, one for commands; both reconnect by themselves with back-off (0.1 s, growing to
5 s).  The bus is *up* when both are there and the channel is subscribed; commands sent while
it is down fail at once instead of waiting in txredisapi's queue (the relay keeps what matters
in its own outbox).

A Redis that stops answering with its connections still open (``CLIENT PAUSE``, a long script,
``DEBUG SLEEP``, a stopped process, a network that drops packets) is found by the first command
left unanswered for :data:`TIMEOUT` seconds: every command waiting then fails, the bus is down
(the relay decides here, as when the connection is lost), and both connections are dropped and
made anew.  A new connection that is not usable (``AUTH``/``SELECT`` answered, channel
subscribed) within :data:`TIMEOUT` is dropped and made anew too.  The relay tells its nicks every
10 s, so a stall is found even in a quiet room.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, interfaces
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.python.failure import Failure

from tcpfiles.chat.buscontract import BusListener, parse_url

__all__ = ["RedisBus"]

#: Append lines to the history stream and publish them as one message on the channel, in one
#: step, so that stream ids and the order of the channel agree (a node that was away reads what
#: it missed by id): ``"ID1,ID2\\nPAYLOAD1\\nPAYLOAD2"``.
POST = """
local ids = {}
for i = 2, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[i])
end
redis.call('PUBLISH', KEYS[2], table.concat(ids, ',') .. '\\n' .. table.concat(ARGV, '\\n', 2))
return ids
"""
#: Take a nick that is free or already ours, and (re)set its time to live.
RECLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
#: Delete a nick only if it is ours (it may have expired and been taken elsewhere).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
#: Seconds after starting (or losing the bus) before an unanswered bus is reported down.
NO_ANSWER = 3.0
#: Seconds Redis has to answer a command (or to make a new connection usable): past that it is
#: taken as stalled, and the bus as down.
TIMEOUT = 3.0


def _classes() -> tuple[type, type]:
    """txredisapi's protocol and factory, made to tell the bus (imported here, not at the top)."""
    import txredisapi

    class _Commands(txredisapi.RedisProtocol):  # type: ignore[misc]
        def connectionMade(self) -> Any:
            self.factory.bus._connected(self)
            return super().connectionMade()  # AUTH, SELECT

    class _Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc]
        def connectionMade(self) -> Any:
            bus = self.factory.bus
            bus._connected(self)
            d = super().connectionMade()  # AUTH, if any: txredisapi's own
            d.addCallback(lambda _: self.subscribe(bus.channel))
            d.addCallbacks(lambda _: bus._subscribed(self), bus._failed)
            return d

        def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
            self.factory.bus._message(message)

        def connectionLost(self, why: Any) -> None:
            super().connectionLost(why)
            self.factory.bus._lost(self, "connection lost")

    class _CommandFactory(txredisapi.RedisFactory):  # type: ignore[misc]
        protocol = _Commands
        stopTrying = _keep_trying

        def addConnection(self, conn: Any) -> None:
            super().addConnection(conn)
            if conn.connected:
                self.bus._commands_ready(conn)

        def delConnection(self, conn: Any) -> None:
            super().delConnection(conn)
            self.bus._lost(conn, "connection lost")

    class _SubscriberFactory(txredisapi.SubscriberFactory):  # type: ignore[misc]
        protocol = _Subscriber
        stopTrying = _keep_trying

    return _SubscriberFactory, _CommandFactory


def _keep_trying(factory: Any) -> defer.Deferred[None]:
    """txredisapi stops reconnecting for good when ``AUTH`` or ``SELECT`` fails, also when the
    connection is lost (or dropped, unanswered) meanwhile: the bus keeps trying, with back-off
    (a wrong password too: it is logged by txredisapi at each try)."""
    return defer.succeed(None)


def _tune(factory: Any, bus: RedisBus, password: str | None) -> None:
    factory.bus = bus
    factory.initialDelay = 0.1
    factory.maxDelay = 5
    factory.password = password
    factory.convertNumbers = False


class RedisBus:
    """A :class:`tcpfiles.chat.bus.Bus` on one Redis server."""

    def __init__(self, reactor: Any, url: str, channel: str, timeout: float = TIMEOUT) -> None:
        self.reactor, self.timeout = reactor, timeout
        self.host, self.port, self.db, password = parse_url(url)
        self.where = f"redis://{self.host}:{self.port}/{self.db}"
        self.channel = channel
        subscriber, commands = _classes()
        # no SELECT for /0, where a connection starts: usable at once, one answer fewer to wait
        self._commands = commands(self.where, self.db or None, 1, isLazy=True)
        _tune(self._commands, self, password)
        self._subscriber_factory = subscriber(isLazy=True)
        _tune(self._subscriber_factory, self, password)
        self._conn: Any = None  # the command connection, when ready
        self._sub: Any = None  # the subscribed connection, when subscribed
        self._listener: BusListener | None = None
        self._up = False
        self._watch: interfaces.IDelayedCall | None = None
        self._waiting: dict[defer.Deferred[Any], interfaces.IDelayedCall] = {}  # unanswered
        self._handshakes: dict[Any, interfaces.IDelayedCall] = {}  # new connections, not usable

    # --- connections --------------------------------------------------------------------

    def start(self, listener: BusListener) -> None:
        """Connect both, and keep them connected."""
        self._listener = listener
        for factory in (self._commands, self._subscriber_factory):
            factory.startConnecting(TCP4ClientEndpoint(self.reactor, self.host, self.port, 5))
        self._watch = self.reactor.callLater(NO_ANSWER, self._unanswered)

    def stop(self) -> defer.Deferred[Any]:
        """Disconnect for good."""
        self._listener = None
        for call in [self._watch, *self._handshakes.values()]:
            if call is not None and call.active():
                call.cancel()
        self._handshakes.clear()
        return defer.gatherResults(
            [self._commands.disconnect(), self._subscriber_factory.disconnect()],
            consumeErrors=True,
        )

    def _unanswered(self) -> None:
        self._watch = None
        if not self._up and self._listener is not None:
            self._listener.bus_down("no connection")

    def _connected(self, conn: Any) -> None:
        """A new connection: dropped if it is not usable in time (Redis stalled)."""
        self._handshakes[conn] = self.reactor.callLater(self.timeout, self._not_usable, conn)

    def _not_usable(self, conn: Any) -> None:
        del self._handshakes[conn]
        if conn is not self._conn and conn is not self._sub:
            conn.transport.abortConnection()  # made anew by txredisapi

    def _usable(self, conn: Any) -> None:
        call = self._handshakes.pop(conn, None)
        if call is not None and call.active():
            call.cancel()

    def _commands_ready(self, conn: Any) -> None:
        self._usable(conn)
        self._conn = conn
        self._check_up()

    def _subscribed(self, sub: Any) -> None:
        self._usable(sub)
        self._sub = sub
        self._check_up()

    def _failed(self, failure: Any) -> None:
        if self._listener is not None:
            self._listener.bus_down(failure.getErrorMessage())

    def _check_up(self) -> None:
        if self._conn is not None and self._sub is not None and not self._up:
            self._up = True
            if self._listener is not None:
                self._listener.bus_up()

    def _lost(self, conn: Any, why: str) -> None:
        self._usable(conn)  # no longer waited for, either
        if conn is self._conn:
            self._conn = None
        elif conn is self._sub:
            self._sub = None
        else:
            return
        self._down(why)

    def _stalled(self) -> None:
        """A command unanswered for ``timeout``: down; every command waiting fails; both
        connections are dropped (txredisapi makes them anew: the bus is up again once Redis
        answers)."""
        why = f"no answer in {self.timeout:g} s"
        conns = [conn for conn in (self._conn, self._sub) if conn is not None]
        self._conn = self._sub = None
        self._down(why)
        waiting, self._waiting = self._waiting, {}
        for result, call in waiting.items():
            if call.active():
                call.cancel()
            result.errback(TimeoutError(f"{self.where}: {why}"))
        for conn in conns:
            conn.transport.abortConnection()

    def _down(self, why: str) -> None:
        was_up, self._up = self._up, False
        if self._listener is not None and was_up:
            self._listener.bus_down(why)
        if self._listener is not None and (self._watch is None or not self._watch.active()):
            self._watch = self.reactor.callLater(NO_ANSWER, self._unanswered)

    def _message(self, message: Any) -> None:
        if self._listener is not None:
            text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
            self._listener.bus_message(str(text))

    # --- commands -----------------------------------------------------------------------

    def _send(self, method: str, *args: Any) -> defer.Deferred[Any]:
        """``conn.method(*args)``: its answer, or a failure at once while down, or after
        ``timeout`` without an answer (then the bus is :meth:`_stalled`)."""
        if not self._up or self._conn is None:
            return defer.fail(ConnectionError(f"{self.where} is not connected"))
        result: defer.Deferred[Any] = defer.Deferred()
        self._waiting[result] = self.reactor.callLater(self.timeout, self._stalled)

        def answered(outcome: Any) -> None:
            call = self._waiting.pop(result, None)
            if call is None:
                return  # failed already, unanswered
            if call.active():
                call.cancel()
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

        defer.maybeDeferred(getattr(self._conn, method), *args).addBoth(answered)
        return result

    def _command(self, *args: Any) -> defer.Deferred[Any]:
        return self._send("execute_command", *args)

    def _script(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        return self._send("eval", script, keys, args)

    def claim(self, key: str, node: str, ttl: float) -> defer.Deferred[bool]:
        """``SET key node NX PX ttl``."""
        d = self._command("SET", key, node, "NX", "PX", int(ttl * 1000))
        return d.addCallback(lambda reply: reply is not None)

    def reclaim(self, key: str, node: str, ttl: float) -> defer.Deferred[bool]:
        """Ours if free or ours, with a fresh TTL."""
        d = self._script(RECLAIM, [key], [node, int(ttl * 1000)])
        return d.addCallback(lambda reply: int(reply) == 1)

    def release(self, key: str, node: str) -> defer.Deferred[Any]:
        """Delete if ours."""
        return self._script(RELEASE, [key], [node])

    def post(self, stream: str, maxlen: int, payloads: list[str]) -> defer.Deferred[Any]:
        """XADD each and PUBLISH them, in one script."""
        return self._script(POST, [stream, self.channel], [maxlen, *payloads])

    def publish(self, payload: str) -> defer.Deferred[Any]:
        """PUBLISH ``-\\nPAYLOAD``."""
        return self._command("PUBLISH", self.channel, f"-\n{payload}")

    def recent(self, stream: str, count: int) -> defer.Deferred[list[tuple[str, str]]]:
        """XREVRANGE, oldest first."""
        d = self._command("XREVRANGE", stream, "+", "-", "COUNT", count)
        return d.addCallback(lambda reply: list(reversed(_entries(reply))))

    def since(self, stream: str, after: str) -> defer.Deferred[list[tuple[str, str]]]:
        """XRANGE after an id."""
        return self._command("XRANGE", stream, f"({after}", "+").addCallback(_entries)


def _entries(reply: Any) -> list[tuple[str, str]]:
    """A stream reply ``[[id, [field, value, ...]], ...]`` as (id, value of ``m``)."""
    entries = []
    for entry_id, fields in reply or []:
        values = dict(zip(fields[::2], fields[1::2], strict=False))
        if "m" in values:
            entries.append((str(entry_id), str(values["m"])))
    return entries
