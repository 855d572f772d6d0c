"""The chat bus on Redis (``--chat-bus redis://HOST:PORT/DB``), with txredisapi.

Needs the ``redis`` extra (``pip install 'tcpfiles[redis]'``), imported when a bus is made:
txredisapi imports the global reactor, which a library module must not do by being imported
(twistd has installed its own by then).  Two connections: one subscribed to the room's
channel, one for commands; both reconnect by themselves with back-off (0.1 s, growing to
5 s).  The bus is *up* when both are there and the channel is subscribed; commands sent while
it is down fail at once instead of waiting in txredisapi's queue (the relay keeps what matters
in its own outbox).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, interfaces
from twisted.internet.endpoints import TCP4ClientEndpoint

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


def _classes() -> tuple[type, type]:
    """txredisapi's protocol and factory, made to tell the bus (imported here, not at the top)."""
    import txredisapi

    class _Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc]
        def connectionMade(self) -> Any:
            bus = self.factory.bus
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
        def addConnection(self, conn: Any) -> None:
            super().addConnection(conn)
            if conn.connected:
                self.bus._commands_ready(conn)

        def delConnection(self, conn: Any) -> None:
            super().delConnection(conn)
            self.bus._lost(conn, "connection lost")

    return _Subscriber, _CommandFactory


def _tune(factory: Any, bus: RedisBus, password: str | None) -> None:
    factory.bus = bus
    factory.initialDelay = 0.1
    factory.maxDelay = 5
    factory.password = password
    factory.convertNumbers = False


class RedisBus:
    """A :class:`tcpfiles.chat.bus.Bus` on one Redis server."""

    def __init__(self, reactor: Any, url: str, channel: str) -> None:
        self.reactor = reactor
        self.host, self.port, self.db, password = parse_url(url)
        self.where = f"redis://{self.host}:{self.port}/{self.db}"
        self.channel = channel
        import txredisapi

        subscriber, commands = _classes()
        self._commands = commands(self.where, self.db, 1, isLazy=True)
        _tune(self._commands, self, password)
        self._subscriber_factory = txredisapi.SubscriberFactory(isLazy=True)
        self._subscriber_factory.protocol = subscriber
        _tune(self._subscriber_factory, self, password)
        self._conn: Any = None  # the command connection, when ready
        self._sub: Any = None  # the subscribed connection, when subscribed
        self._listener: BusListener | None = None
        self._up = False
        self._watch: interfaces.IDelayedCall | None = None

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
        if self._watch is not None and self._watch.active():
            self._watch.cancel()
        return defer.gatherResults(
            [self._commands.disconnect(), self._subscriber_factory.disconnect()],
            consumeErrors=True,
        )

    def _unanswered(self) -> None:
        self._watch = None
        if not self._up and self._listener is not None:
            self._listener.bus_down("no connection")

    def _commands_ready(self, conn: Any) -> None:
        self._conn = conn
        self._check_up()

    def _subscribed(self, sub: Any) -> None:
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
        if conn is self._conn:
            self._conn = None
        elif conn is self._sub:
            self._sub = None
        else:
            return
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

    def _command(self, *args: Any) -> defer.Deferred[Any]:
        if not self._up or self._conn is None:
            return defer.fail(ConnectionError(f"{self.where} is not connected"))
        return defer.maybeDeferred(self._conn.execute_command, *args)

    def _script(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        if not self._up or self._conn is None:
            return defer.fail(ConnectionError(f"{self.where} is not connected"))
        return defer.maybeDeferred(self._conn.eval, script, keys, args)

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
