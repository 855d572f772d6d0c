"""One room over two nodes sharing an in-memory bus: what the relay promises, without Redis."""

from __future__ import annotations

import subprocess
import sys

from twisted.internet import defer, task
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.chat.bus import BATCH, OUTBOX, RoomBus, parse_url, stream_order
from tcpfiles.chat.plugin import ChatOptions
from tcpfiles.chat.room import Room
from tests.chat.fakebus import FakeBus, FakeRedis
from tests.chat.test_room import Person


class Node:
    """A process: its room, its relay to the shared bus."""

    def __init__(self, server: FakeRedis, name: str, clock: task.Clock) -> None:
        self.room = Room(history=3, clock=clock.seconds)
        self.bus = FakeBus(server)
        self.relay = RoomBus(self.room, self.bus, clock, node=name, ttl=30.0, history=3)
        self.relay.start()

    def join(self, nick: str) -> Person:
        person = Person()
        self.room.set_nick(person, nick)
        assert person.nick == nick, person.got
        person.got.clear()
        return person


class TwoNodes(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.server = FakeRedis(self.clock)
        self.a = Node(self.server, "A", self.clock)
        self.b = Node(self.server, "B", self.clock)

    def say(self, node: Node, person: Person, text: str) -> None:
        """A line typed on ``node``; its reactor turn ends (what was said there is posted)."""
        node.room.line(person, text)
        self.clock.advance(0)

    def test_said_lines_cross_once(self) -> None:
        """A line said on A reaches B's users once, and A's own users once (not again)."""
        ann, dave = self.a.join("ann"), self.a.join("dave")
        bob = self.b.join("bob")
        ann.got.clear()
        dave.got.clear()
        self.say(self.a, ann, "hello")
        self.say(self.a, ann, "/me waves")
        assert bob.got == ["<ann> hello", "* ann waves"]
        assert dave.got == ["<ann> hello", "* ann waves"]
        assert ann.got == ["* ann waves"]  # as today: not echoed, but /me is

    def test_notices_cross(self) -> None:
        """Joins, renames and leaves on A are told to B, formatted as on A."""
        bob = self.b.join("bob")
        ann = self.a.join("ann")
        self.a.room.set_nick(ann, "anna")
        self.a.room.leave(ann, "quit")
        assert bob.got == ["*** ann joined", "*** ann is now known as anna", "*** anna left (quit)"]

    def test_nick_unique_across_nodes(self) -> None:
        """A nick taken on A is refused on B as a local duplicate is; free again once left."""
        ann = self.a.join("ann")
        other = Person()
        self.b.room.set_nick(other, "ANN")
        assert other.nick is None
        assert other.got == ["!!! the nick ANN is taken"]
        self.a.room.set_nick(ann, "anna")  # the old nick is released on rename
        self.b.room.set_nick(other, "ann")
        assert other.nick == "ann"
        self.b.room.set_nick(Person(), "Anna")
        self.a.room.leave(ann)
        late = self.b.join("anna")
        assert late.nick == "anna"

    def test_history_across_nodes(self) -> None:
        """A newcomer on B gets what was said on A (the last ``history`` lines), as today."""
        ann = self.a.join("ann")
        for n in range(5):
            self.say(self.a, ann, f"line {n}")
        carol = Person()
        self.b.room.set_nick(carol, "carol")
        assert carol.got[0].startswith("*** welcome, carol")
        assert carol.got[1:] == ["<ann> line 2", "<ann> line 3", "<ann> line 4"]

    def test_down_then_up(self) -> None:
        """Bus down: local talk goes on, one warning; back: nicks re-claimed, missed lines
        delivered once, a recovery line in the log."""
        ann, dave = self.a.join("ann"), self.a.join("dave")
        bob = self.b.join("bob")
        dave.got.clear()
        with capturedLogs() as events:
            self.server.crash()  # keys and streams lost, as with --save ''
            self.say(self.a, ann, "while down")
            self.say(self.a, ann, "still down")
            self.a.bus.lost()  # a second report of the same outage is not logged again
        warnings = [formatEvent(e) for e in events if "unreachable" in formatEvent(e)]
        assert len(warnings) == 2  # one per node
        assert dave.got == ["<ann> while down", "<ann> still down"]
        assert bob.got == []
        imposter = Person()
        self.b.room.set_nick(imposter, "ann")  # cannot be checked while down: taken locally
        self.b.room.leave(imposter)
        bob.got.clear()
        self.server.restart()
        with capturedLogs() as events:
            self.b.bus.reconnect()
            self.a.bus.reconnect()
        assert bob.got == ["<ann> while down", "<ann> still down"]
        assert any("reached" in formatEvent(e) for e in events)
        assert self.server.get("tcpfiles:chat:nick:ann") == "A"  # re-claimed
        refused = Person()
        self.b.room.set_nick(refused, "ann")
        assert refused.got == ["!!! the nick ann is taken"]
        self.say(self.a, ann, "after")
        assert bob.got[-1] == "<ann> after"
        assert bob.got.count("<ann> while down") == 1

    def test_node_away_catches_up(self) -> None:
        """B's connection drops while A still talks: B reads what it missed, once."""
        ann = self.a.join("ann")
        bob = self.b.join("bob")
        ann.got.clear()
        self.say(self.a, ann, "before")
        self.b.bus.lost()
        self.say(self.a, ann, "missed 1")
        self.say(self.a, ann, "missed 2")
        self.b.bus.reconnect()
        self.say(self.a, ann, "after")
        assert bob.got == ["<ann> before", "<ann> missed 1", "<ann> missed 2", "<ann> after"]

    def test_nicks_refreshed_and_expire(self) -> None:
        """The owner keeps its nicks alive; a node that stops lets them expire."""
        self.a.join("ann")
        self.clock.advance(100)
        assert self.server.get("tcpfiles:chat:nick:ann") == "A"
        self.a.relay.stop()
        self.clock.advance(31)
        assert self.server.get("tcpfiles:chat:nick:ann") is None
        assert self.b.join("ann").nick == "ann"

    def test_leaving_while_claim_pending(self) -> None:
        """A user who leaves before the bus answers does not keep the nick."""
        answer: defer.Deferred[bool] = defer.Deferred()
        self.b.bus.claim = lambda key, node, ttl: answer  # type: ignore[method-assign]
        slow = Person()
        self.b.room.set_nick(slow, "slow")
        self.b.room.set_nick(slow, "slow2")
        assert slow.got == ["!!! your last /nick is still being checked"]
        self.b.room.leave(slow)
        self.server.set("tcpfiles:chat:nick:slow", "B", 30)
        answer.callback(True)
        assert slow.nick is None
        assert self.server.get("tcpfiles:chat:nick:slow") is None

    def test_stop_when_empty(self) -> None:
        """On shutdown the relay waits for the users here to leave (their leaves are told)."""
        ann = self.a.join("ann")
        bob = self.b.join("bob")
        dan = self.a.join("dan")
        self.a.relay.stop_when_empty()
        assert self.a.relay.up
        self.a.room.line(dan, "last words")  # said in the turn the relay stops in
        self.a.room.leave(dan, "server shutting down")
        self.a.room.leave(ann, "server shutting down")
        assert bob.got == [
            "*** dan joined",
            "<dan> last words",  # before the notice that follows it here
            "*** dan left (server shutting down)",
            "*** ann left (server shutting down)",
        ]
        self.clock.advance(0)
        assert not self.a.relay.up

    def test_foreign_messages_ignored(self) -> None:
        """Something else on the channel is logged and skipped."""
        bob = self.b.join("bob")
        with capturedLogs() as events:
            self.server.publish("- not json")
            self.server.publish('- {"node": "C", "other": 1}')
        assert bob.got == []
        assert any("not ours" in formatEvent(e) for e in events)

    def test_stream_order(self) -> None:
        assert stream_order("10-2") < stream_order("10-10") < stream_order("11-0")

    def test_outbox_reaches_a_node_that_comes_back_later(self) -> None:
        """After a restart that lost everything, A is back first and sends what was said while
        down; B, back later, reads it from the stream: nothing lost, nothing twice."""
        ann = self.a.join("ann")
        bob = self.b.join("bob")
        self.server.crash()
        self.say(self.a, ann, "while down")
        self.server.restart()
        self.a.bus.reconnect()
        assert bob.got == []
        self.b.bus.reconnect()
        self.say(self.a, ann, "after")
        assert bob.got == ["<ann> while down", "<ann> after"]

    def test_outbox_is_bounded(self) -> None:
        """At most OUTBOX said lines wait for the bus; the oldest go first."""
        ann = self.a.join("ann")
        bob = self.b.join("bob")
        self.server.crash()
        self.a.room._rate = self.a.room._burst = 1e9
        self.a.room._buckets.clear()
        for n in range(OUTBOX + 5):
            self.a.room.line(ann, f"n{n}")
        self.server.restart()
        self.b.bus.reconnect()
        self.a.bus.reconnect()
        assert len(bob.got) == OUTBOX
        assert self.server.posts == OUTBOX // BATCH
        assert bob.got[0] == "<ann> n5"

    def test_lines_dropped_from_the_outbox_are_counted(self) -> None:
        """Beyond OUTBOX waiting lines the oldest are dropped, and how many is logged once
        when the outbox is sent."""
        ann = self.a.join("ann")
        self.server.crash()
        self.a.room._rate = self.a.room._burst = 1e9
        for n in range(OUTBOX + 7):
            self.a.room.line(ann, f"n{n}")
        self.server.restart()
        with capturedLogs() as events:
            self.a.bus.reconnect()
            self.clock.advance(0)
        dropped = [formatEvent(e) for e in events if "dropped" in formatEvent(e)]
        assert len(dropped) == 1 and "dropped 7 said line(s)" in dropped[0], dropped
        assert self.a.relay.outbox.tell_dropped() == 0

    def test_lines_of_one_turn_travel_together(self) -> None:
        """What is said here in one reactor turn is one message on the channel (the other
        nodes then write it to each user at once), in order, each line still once."""
        ann, dan = self.a.join("ann"), self.a.join("dan")
        bob = self.b.join("bob")
        posts = self.server.posts
        for n in range(5):
            self.a.room.line(ann if n % 2 else dan, f"n{n}")
        assert bob.got == []
        self.clock.advance(0)
        assert self.server.posts == posts + 1
        assert bob.got == ["<dan> n0", "<ann> n1", "<dan> n2", "<ann> n3", "<dan> n4"]

    def test_a_failed_post_is_posted_again_and_delivered_once(self) -> None:
        """A post that fails (whether or not Redis did it) goes back to the outbox and is
        posted again; the other node and a newcomer's history have each line once."""
        ann = self.a.join("ann")
        bob = self.b.join("bob")
        for when in ("after", "before"):
            self.a.bus.fail_post = when
            self.say(self.a, ann, f"failed {when}")
            self.say(self.a, ann, f"next to {when}")
        lines = [
            f"<ann> {kind} {when}" for when in ("after", "before") for kind in ("failed", "next to")
        ]
        assert bob.got == lines  # posted again with the next line; once each
        self.a.bus.fail_post = "before"
        self.say(self.a, ann, "then down")
        self.a.bus.lost()
        assert [seq for seq, _ in self.a.relay.outbox] == [5]
        self.a.bus.reconnect()
        assert bob.got == [*lines, "<ann> then down"]
        carol = Person()
        self.b.room.set_nick(carol, "carol")
        assert carol.got[1:] == lines[-2:] + ["<ann> then down"]  # history 3, each once

    def test_who_and_msg_across_nodes(self) -> None:
        """/who and the welcome count everyone; /msg reaches a nick on another node; a node
        that stops, or stops telling, is forgotten."""
        ann = self.a.join("ann")
        bob = self.b.join("bob")
        self.clock.advance(0)  # the rosters are told at the end of the turn
        self.say(self.b, bob, "/who")
        assert bob.got[-1] == "*** 2 here: ann, bob"
        self.say(self.b, bob, "/msg ANN psst")
        assert ann.got[-1] == bob.got[-1] == "[bob -> ann] psst"
        self.say(self.a, ann, "/msg nobody hi")
        assert ann.got[-1] == "!!! no one called nobody is here"
        carol = Person()
        self.b.room.set_nick(carol, "carol")
        assert carol.got[0].startswith("*** welcome, carol; 3 here")
        self.clock.advance(0)
        self.a.relay.stop()
        self.say(self.b, bob, "/who")
        assert bob.got[-1] == "*** 2 here: bob, carol"
        self.b.relay.stop()
        third = Node(self.server, "C", self.clock)
        dan = third.join("dan")
        self.clock.advance(0)
        self.server.buses.remove(third.bus)  # C dies without a word
        third.bus.subscribed = False
        self.b = Node(self.server, "B2", self.clock)
        eve = self.b.join("eve")
        self.clock.advance(0)
        self.say(self.b, eve, "/who")
        assert eve.got[-1] == "*** 1 here: eve"  # C's roster never reached B2
        self.server.buses.append(third.bus)
        third.bus.subscribed = True
        self.clock.advance(10)  # C's refresh tells it
        self.say(self.b, eve, "/who")
        assert eve.got[-1] == "*** 2 here: dan, eve"
        self.server.buses.remove(third.bus)
        third.bus.subscribed = False
        self.clock.advance(31)
        self.say(self.b, eve, "/who")
        assert eve.got[-1] == "*** 1 here: eve"
        assert dan.nick == "dan"


class OptionTests(SynchronousTestCase):
    """--chat-bus is checked when parsed; without txredisapi, a usage error names the extra."""

    def test_bad_urls(self) -> None:
        for url in ("http://x", "redis://", "redis://h/x"):
            with self.assertRaises(usage.UsageError):
                ChatOptions().parseOptions(["--bus", url])
        assert parse_url("redis://:pw@h:1/2") == ("h", 1, 2, "pw")
        assert parse_url("redis://h") == ("h", 6379, 0, None)

    def test_without_the_extra(self) -> None:
        """chat imports and works without txredisapi; --bus then says what to install."""
        program = (
            "import sys; sys.modules['txredisapi'] = None\n"
            "from twisted.python import usage\n"
            "from tcpfiles.chat.plugin import ChatOptions\n"
            "ChatOptions().parseOptions([])\n"
            "try:\n"
            "    ChatOptions().parseOptions(['--bus', 'redis://127.0.0.1:6379'])\n"
            "except usage.UsageError as e:\n"
            "    print(e)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
        )
        assert "pip install 'tcpfiles[redis]'" in out.stdout, out.stdout + out.stderr
