"""An in-memory bus with Redis's semantics for what the chat relay uses, shared by "nodes"."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from tcpfiles.chat.buscontract import BusListener


class BusDown(ConnectionError):
    """What every command fails with while the fake server is down."""


class FakeRedis:
    """The shared server: keys with expiry, streams, a channel; up or down."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.keys: dict[str, tuple[str, float]] = {}
        self.streams: dict[str, list[tuple[str, str]]] = {}
        self.buses: list[FakeBus] = []
        self.running = True
        self.seq = 0
        self.published: list[str] = []
        self.posts = 0

    def get(self, key: str) -> str | None:
        value = self.keys.get(key)
        if value is None or value[1] <= self.clock.seconds():
            self.keys.pop(key, None)
            return None
        return value[0]

    def set(self, key: str, value: str, ttl: float) -> None:
        self.keys[key] = (value, self.clock.seconds() + ttl)

    def publish(self, message: str) -> None:
        self.published.append(message)
        for bus in self.buses:
            if bus.subscribed:
                bus.listener.bus_message(message)

    def crash(self, lose_data: bool = True) -> None:
        """Stop (as ``--save ''`` does, forgetting everything); every node hears it."""
        self.running = False
        if lose_data:
            self.keys.clear()
            self.streams.clear()
        for bus in self.buses:
            bus.lost()

    def restart(self) -> None:
        """Back; each node reconnects when its ``reconnect`` is called."""
        self.running = True


class FakeBus:
    """One node's connection to a :class:`FakeRedis` (answers at once)."""

    def __init__(self, server: FakeRedis) -> None:
        self.server = server
        self.where = "fake://bus"
        self.subscribed = False
        self.fail_post: str | None = None  # "before" or "after": the next post fails so
        self.listener: BusListener
        server.buses.append(self)

    def start(self, listener: BusListener) -> None:
        self.listener = listener
        self.reconnect()

    def reconnect(self) -> None:
        if self.server.running:
            self.subscribed = True
            self.listener.bus_up()
        else:
            self.listener.bus_down("connection refused")

    def lost(self) -> None:
        if self.subscribed:
            self.subscribed = False
            self.listener.bus_down("connection lost")

    def stop(self) -> defer.Deferred[Any]:
        self.subscribed = False
        self.server.buses.remove(self)
        return defer.succeed(None)

    def _check(self) -> None:
        if not (self.server.running and self.subscribed):
            raise BusDown("down")

    def claim(self, key: str, node: str, ttl: float) -> defer.Deferred[bool]:
        return defer.maybeDeferred(self._claim, key, node, ttl, False)

    def reclaim(self, key: str, node: str, ttl: float) -> defer.Deferred[bool]:
        return defer.maybeDeferred(self._claim, key, node, ttl, True)

    def _claim(self, key: str, node: str, ttl: float, ours_too: bool) -> bool:
        self._check()
        holder = self.server.get(key)
        if holder is None or (ours_too and holder == node):
            self.server.set(key, node, ttl)
            return True
        return False

    def release(self, key: str, node: str) -> defer.Deferred[Any]:
        return defer.maybeDeferred(self._release, key, node)

    def _release(self, key: str, node: str) -> None:
        self._check()
        if self.server.get(key) == node:
            del self.server.keys[key]

    def post(self, stream: str, maxlen: int, payloads: list[str]) -> defer.Deferred[Any]:
        return defer.maybeDeferred(self._post, stream, maxlen, payloads)

    def _post(self, stream: str, maxlen: int, payloads: list[str]) -> list[str]:
        self._check()
        if self.fail_post == "before":
            self.fail_post = None
            raise BusDown("lost before the post")
        ids = []
        entries = self.server.streams.setdefault(stream, [])
        for payload in payloads:
            self.server.seq += 1
            ids.append(f"{int(self.server.clock.seconds() * 1000)}-{self.server.seq}")
            entries.append((ids[-1], payload))
        del entries[:-maxlen]
        self.server.posts += 1
        self.server.publish(",".join(ids) + "\n" + "\n".join(payloads))
        if self.fail_post == "after":
            self.fail_post = None
            raise BusDown("lost after the post, before its answer")
        return ids

    def publish(self, payload: str) -> defer.Deferred[Any]:
        return defer.maybeDeferred(self._publish, payload)

    def _publish(self, payload: str) -> None:
        self._check()
        self.server.publish(f"-\n{payload}")

    def recent(self, stream: str, count: int) -> defer.Deferred[list[tuple[str, str]]]:
        return defer.maybeDeferred(
            lambda: (self._check(), self.server.streams.get(stream, [])[-count:])[1]
        )

    def since(self, stream: str, after: str) -> defer.Deferred[list[tuple[str, str]]]:
        def entries() -> list[tuple[str, str]]:
            self._check()
            mark = [int(part) for part in after.split("-")]
            return [
                (i, p)
                for i, p in self.server.streams.get(stream, [])
                if [int(part) for part in i.split("-")] > mark
            ]

        return defer.maybeDeferred(entries)
