"""The Redis bus when Redis stops answering with its connections still open (paused, stopped,
cut off): a room on :class:`RedisBus` whose txredisapi connections are fakes that answer when
the test says, or never; everything on a :class:`task.Clock`."""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any
from unittest import SkipTest

from twisted.internet import defer, task
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.chat.bus import POSTS_IN_FLIGHT, RoomBus
from tcpfiles.chat.room import Room
from tests.chat.test_room import Person

if importlib.util.find_spec("txredisapi") is None:
    if os.environ.get("TCPFILES_REQUIRE_EXTERNAL") == "1":
        raise AssertionError("txredisapi is not installed (pip install -e '.[test]')")
    raise SkipTest("txredisapi is not installed (the redis extra)")

from tcpfiles.chat.redisbus import POST, RECLAIM, TIMEOUT, RedisBus  # noqa: E402


class Transport:
    def __init__(self) -> None:
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class Connection:
    """A txredisapi connection: what it was asked, each answer a Deferred the test fires."""

    def __init__(self) -> None:
        self.transport = Transport()
        self.asked: list[tuple[tuple[Any, ...], defer.Deferred[Any]]] = []  # unanswered
        self.history: list[tuple[Any, ...]] = []  # everything asked

    def execute_command(self, *args: Any) -> defer.Deferred[Any]:
        self.history.append(args)
        self.asked.append((args, defer.Deferred()))
        return self.asked[-1][1]

    def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        return self.execute_command("EVAL", script, keys, args)

    def posts(self) -> list[list[str]]:
        """The said lines of each post asked."""
        return [
            [json.loads(payload)["said"] for payload in args[3][1:]]
            for args in self.history
            if args[:2] == ("EVAL", POST)
        ]

    def reclaimed(self) -> list[str]:
        return sorted(args[2][0] for args in self.history if args[:2] == ("EVAL", RECLAIM))

    def answer(self) -> None:
        """Answer what was asked (and what that asks in turn) as Redis would, here."""
        while self.asked:
            args, answer = self.asked.pop(0)
            if args[0] == "EVAL":
                reply: Any = [f"1-{n}" for n in range(len(args[3]) - 1)]
                reply = 1 if args[1] == RECLAIM else reply
            else:
                reply = {"SET": "OK", "XREVRANGE": [], "XRANGE": []}.get(args[0], 0)
            answer.callback(reply)


class StalledRedisTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.bus = RedisBus(self.clock, "redis://127.0.0.1:1/0", "tcpfiles:chat:room")
        for factory in (self.bus._commands, self.bus._subscriber_factory):
            factory.startConnecting = lambda endpoint: None  # the test connects it
        self.room = Room(history=3, clock=self.clock.seconds)
        self.room._rate = self.room._burst = 1e9
        self.relay = RoomBus(self.room, self.bus, self.clock, node="A", history=3)
        self.relay.start()
        self.conn, self.sub = self.connect()
        self.addCleanup(self.relay.stop)

    def connect(self) -> tuple[Connection, Connection]:
        """Both connections made and usable (the channel subscribed): the bus is up."""
        conn, sub = Connection(), Connection()
        for made in (conn, sub):
            self.bus._connected(made)
        self.bus._commands_ready(conn)
        self.bus._subscribed(sub)
        conn.answer()
        return conn, sub

    def test_stalled_redis(self) -> None:
        """Redis stops answering: at most POSTS_IN_FLIGHT posts are sent meanwhile (the rest
        waits in the outbox); after TIMEOUT a newcomer's /nick is decided here, the bus is
        down (one warning), both connections are dropped; once connected again, what was said
        is posted once, in order, and the recovery is logged."""
        ann = Person()
        self.room.set_nick(ann, "ann")
        self.conn.answer()
        assert ann.nick == "ann"
        for n in range(10):  # ten turns: ten posts, were they all sent
            self.room.line(ann, f"line {n}")
            self.clock.advance(0)
        assert len(self.conn.posts()) == POSTS_IN_FLIGHT
        assert len(self.relay.outbox) == 10 - POSTS_IN_FLIGHT
        bob = Person()
        self.room.set_nick(bob, "bob")
        self.clock.advance(TIMEOUT - 0.1)
        assert bob.got == []
        with capturedLogs() as events:
            self.clock.advance(0.1)
            self.clock.advance(10)  # and a refresh: the bus is not asked while down
        assert bob.nick == "bob"
        assert bob.got[0].startswith("*** welcome, bob; 2 here")
        assert not self.relay.up
        assert self.conn.transport.aborted and self.sub.transport.aborted
        warnings = [formatEvent(e) for e in events if e["log_level"].name == "warn"]
        assert len(warnings) == 1 and "no answer in 3 s" in warnings[0], warnings
        assert [seq for seq, _ in self.relay.outbox] == list(range(1, 11))
        self.room.set_nick(bob, "bob2")  # decided here at once while down
        assert bob.got[-1] == "*** bob is now known as bob2"
        with capturedLogs() as events:
            conn, _ = self.connect()
            self.clock.advance(0)
            conn.answer()
        assert conn.posts() == [[f"<ann> line {n}" for n in range(10)]]
        assert conn.reclaimed() == ["tcpfiles:chat:nick:ann", "tcpfiles:chat:nick:bob2"]
        assert any("reached after" in formatEvent(e) for e in events)
        assert len(self.relay.outbox) == 0 and self.relay.outbox.unanswered == 0

    def test_a_new_connection_that_is_not_usable_is_dropped(self) -> None:
        """A connection made while Redis is stalled (AUTH, SELECT or SUBSCRIBE unanswered)
        is dropped after TIMEOUT, to be made anew; a usable one is kept."""
        waiting = Connection()
        self.bus._connected(waiting)
        self.clock.advance(TIMEOUT)
        assert waiting.transport.aborted
        assert not self.conn.transport.aborted and not self.sub.transport.aborted
        assert self.relay.up

    def test_a_quiet_room_finds_a_stall(self) -> None:
        """With no one here, the relay still tells its nicks every 10 s: a stall is found by
        then (and the bus is up again once Redis answers)."""
        self.clock.advance(10)
        assert self.conn.asked  # the roster, unanswered
        self.clock.advance(TIMEOUT)
        assert not self.relay.up
        assert self.conn.transport.aborted
        self.connect()
        assert self.relay.up
