"""Flood control on the wire: every line a member sends spends the same budget.

Each flood is sent whole and one byte at a time; the room sees the same lines either way.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.chat.plugin import ChatOptions
from tcpfiles.chat.protocol import ChatFactory, ChatProtocol
from tcpfiles.chat.room import FANOUT_COST, SLOW_DOWN, WHO_NAMES_PER_TOKEN, Room, who_cost
from tcpfiles.testing import connect
from tests.chat.test_protocol import make_with_accounts
from tests.chat.test_room import Person

RATE, BURST = 5.0, 20.0  # the defaults


def make_factory(clock: task.Clock, *args: str) -> ChatFactory:
    options = ChatOptions()
    options.parseOptions(list(args))
    return ChatFactory(clock, options)


def feed(protocol: ChatProtocol, data: bytes, byte_by_byte: bool) -> None:
    """Deliver ``data`` whole, or one byte per dataReceived."""
    if byte_by_byte:
        for i in range(len(data)):
            protocol.dataReceived(data[i : i + 1])
    else:
        protocol.dataReceived(data)


def lines(transport) -> list[str]:
    out = transport.value().decode("utf-8").splitlines()
    transport.clear()
    return out


class RoomFixture:
    """A room on a Clock with a talker, a passive listener and ``extra`` idle members."""

    def __init__(self, extra: int = 0, *args: str) -> None:
        self.clock = task.Clock()
        self.factory = make_factory(self.clock, *args)
        self.talker, self.talker_t = connect(self.factory, port=1)
        self.passive, self.passive_t = connect(self.factory, port=2)
        self.talker.dataReceived(b"/nick talker\n")
        self.passive.dataReceived(b"/nick passive\n")
        for n in range(extra):
            member, _ = connect(self.factory, port=100 + n)
            member.dataReceived(f"/nick m{n}\n".encode())
        self.factory.room._buckets.clear()  # joining spent tokens: start the test with full ones
        lines(self.talker_t), lines(self.passive_t)


class FloodTests(SynchronousTestCase):
    """Commands spend the bucket, fan-out costs more, and the sender is told once."""

    def both(self, check) -> None:
        """Run ``check(byte_by_byte)`` for whole and byte-by-byte input."""
        for byte_by_byte in (False, True):
            with self.subTest(byte_by_byte=byte_by_byte):
                check(byte_by_byte)

    def test_nick_toggling_spends_the_bucket(self) -> None:
        """Toggling /nick renames at most burst/FANOUT_COST times, then one per refill."""

        def check(byte_by_byte: bool) -> None:
            room = RoomFixture()
            feed(room.talker, b"/nick toggled\n/nick talker\n" * 100, byte_by_byte)
            renames = [line for line in lines(room.passive_t) if "is now known as" in line]
            self.assertEqual(len(renames), int(BURST / FANOUT_COST))
            self.assertEqual(lines(room.talker_t).count(SLOW_DOWN), 1)
            room.clock.advance(FANOUT_COST / RATE)  # exactly one more rename's worth
            feed(room.talker, b"/nick again\n/nick twice\n", byte_by_byte)
            self.assertEqual(lines(room.passive_t), ["*** talker is now known as again"])

        self.both(check)

    def test_who_flood_spends_the_bucket(self) -> None:
        """/who costs more than a line, and more in a bigger room; floods get a few answers."""

        def check(byte_by_byte: bool) -> None:
            room = RoomFixture(extra=48)
            cost = who_cost(50)
            self.assertEqual(cost, FANOUT_COST + 50 // WHO_NAMES_PER_TOKEN)
            feed(room.talker, b"/who\n" * 500, byte_by_byte)
            got = lines(room.talker_t)
            answers = [line for line in got if line.startswith("*** 50 here:")]
            self.assertEqual(len(answers), int(BURST // cost))
            self.assertEqual(got.count(SLOW_DOWN), 1)
            self.assertEqual(len(got), len(answers) + 1)

        self.both(check)

    def test_who_cost_never_exceeds_the_burst(self) -> None:
        """In a huge room /who still works for a member who waits for a full bucket."""
        now = [0.0]
        room = Room(clock=lambda: now[0], rate=1.0, burst=3.0)
        self.assertGreater(who_cost(10_000), 3.0)
        for n in range(60):  # a room bigger than the cost scale
            member = Person()
            room.set_nick(member, f"m{n}")
        asker = Person()
        room.set_nick(asker, "asker")
        asker.got.clear()
        room.line(asker, "/who")
        self.assertTrue(asker.got[-1].startswith("*** 61 here:"))
        room.line(asker, "/who")
        self.assertEqual(asker.got[-1], SLOW_DOWN)
        now[0] += 3.0
        room.line(asker, "/who")
        self.assertTrue(asker.got[-1].startswith("*** 61 here:"))

    def test_msg_flood_spends_the_bucket(self) -> None:
        """A /msg flood delivers at most a burst of private lines."""

        def check(byte_by_byte: bool) -> None:
            room = RoomFixture()
            feed(room.talker, b"/msg passive psst\n" * 200, byte_by_byte)
            self.assertEqual(len(lines(room.passive_t)), int(BURST))
            got = lines(room.talker_t)
            self.assertEqual(got.count(SLOW_DOWN), 1)
            self.assertEqual(len(got), int(BURST) + 1)

        self.both(check)

    def test_unknown_command_flood_spends_the_bucket(self) -> None:
        """Unknown commands, /help and empty lines spend a token each: no reply flood."""

        def check(byte_by_byte: bool) -> None:
            room = RoomFixture()
            feed(room.talker, b"/frob\n/help\n\n/me\n" * 100, byte_by_byte)
            got = lines(room.talker_t)
            self.assertEqual(got.count(SLOW_DOWN), 1)
            self.assertLessEqual(len(got), int(BURST) + 1)
            self.assertEqual(lines(room.passive_t), [])

        self.both(check)

    def test_fanout_costs_more_than_a_line(self) -> None:
        """After one rename (5 tokens), 15 lines fit in a 20-token burst, not 19."""
        room = RoomFixture()
        feed(room.talker, b"/nick renamed\n", False)
        feed(room.talker, b"".join(b"line %d\n" % n for n in range(30)), False)
        said = [line for line in lines(room.passive_t) if line.startswith("<renamed>")]
        self.assertEqual(len(said), int(BURST - FANOUT_COST))

    def test_notice_once_per_episode(self) -> None:
        """A thousand refused lines get one notice; after a line gets through, a new episode."""

        def check(byte_by_byte: bool) -> None:
            room = RoomFixture()
            feed(room.talker, b"spam\n" * 1000, byte_by_byte)
            self.assertEqual(lines(room.talker_t), [SLOW_DOWN])
            room.clock.advance(1.0 / RATE)
            feed(room.talker, b"ok\nspam\nspam\n", byte_by_byte)
            self.assertEqual(lines(room.talker_t), [SLOW_DOWN])
            said = [line for line in lines(room.passive_t) if line.startswith("<talker>")]
            self.assertEqual(said[-1], "<talker> ok")
            self.assertEqual(len(said), int(BURST) + 1)

        self.both(check)

    def test_quit_works_over_budget(self) -> None:
        """/quit is never refused, so a flooding client can always leave."""
        room = RoomFixture()
        feed(room.talker, b"spam\n" * 100 + b"/quit\n", False)
        self.assertEqual(lines(room.talker_t)[-1], "*** bye")
        self.assertTrue(room.talker_t.disconnecting)

    def test_long_lines_spend_the_bucket(self) -> None:
        """Over-long lines get at most a burst of notices, not one each."""

        def check(byte_by_byte: bool) -> None:
            room = RoomFixture(0, "--max-line=16")
            feed(room.talker, (b"x" * 40 + b"\n") * 50, byte_by_byte)
            got = lines(room.talker_t)
            self.assertEqual(got.count("!!! line too long (max 16 bytes)"), int(BURST))
            self.assertEqual(got.count(SLOW_DOWN), 1)

        self.both(check)

    def test_login_attempts_spend_the_bucket(self) -> None:
        """With accounts, /login attempts and lines before a login spend the bucket too."""

        def check(byte_by_byte: bool) -> None:
            factory = make_with_accounts()
            user, user_t = connect(factory, port=1)
            lines(user_t)
            feed(user, b"/login alice\nhello\n/nick x\n" * 50, byte_by_byte)
            got = lines(user_t)
            self.assertEqual(len(got), int(BURST) + 1)
            self.assertEqual(got.count(SLOW_DOWN), 1)
            feed(user, b"/login alice apw\n", byte_by_byte)  # over budget: refused silently
            self.assertEqual(lines(user_t), [])
            self.assertNotIn("alice", factory.room.members)

        self.both(check)

    def test_who_flood_output_stays_bounded_for_a_slow_reader(self) -> None:
        """Even with flood control lifted, a /who flooder that does not read is dropped."""
        room = RoomFixture(48, "--rate=1000000", "--burst=1000000", "--max-queue=65536")
        room.talker.pauseProducing()  # what Twisted does when the socket buffer is full
        feed(room.talker, b"/who\n" * 10_000, False)
        self.assertTrue(room.talker_t.disconnecting)
        self.assertNotIn("talker", room.factory.room.members)
        written = room.talker_t.value()
        answer = written.index(b"\n") + 1
        self.assertLessEqual(len(written), 65536 + 2 * answer)
        self.assertEqual(lines(room.passive_t), ["*** talker left (too slow: output queue full)"])


class ReadingHeldTests(SynchronousTestCase):
    """Over budget, a member's further lines in the same read are dropped at once (not parsed
    one by one) and its connection is not read until a line is allowed again."""

    def test_a_flood_of_empty_lines_costs_one_pass(self) -> None:
        """10,000 empty lines in one read: the room sees at most the burst of them, reading is
        paused, and resumes once a token is back."""
        fixture = RoomFixture()
        seen: list[str] = []
        real_line = fixture.factory.room.line

        def counting(member, text):  # type: ignore[no-untyped-def]
            seen.append(text)
            return real_line(member, text)

        self.patch(fixture.factory.room, "line", counting)
        fixture.talker.dataReceived(b"\n" * 10_000)
        self.assertLessEqual(len(seen), BURST + 1)
        self.assertEqual(fixture.talker_t.producerState, "paused")
        self.assertEqual(lines(fixture.talker_t), [SLOW_DOWN])
        fixture.clock.advance(1 / RATE)
        self.assertEqual(fixture.talker_t.producerState, "producing")
        fixture.talker.dataReceived(b"hello again\n")
        self.assertEqual(lines(fixture.passive_t), ["<talker> hello again"])

    def test_quit_in_a_flood_is_honoured(self) -> None:
        """A /quit among the dropped lines still ends the session."""
        fixture = RoomFixture()
        fixture.talker.dataReceived(b"x\n" * 100 + b"/quit\n" + b"y\n" * 100)
        self.assertTrue(fixture.talker_t.disconnecting)
        self.assertIn("*** bye", lines(fixture.talker_t))

    def test_partial_line_after_a_flood_is_dropped_whole(self) -> None:
        """The tail of a line cut by the drop is not taken for a line of its own."""
        fixture = RoomFixture()
        fixture.talker.dataReceived(b"a\n" * 30 + b"half of a li")
        fixture.clock.advance(10)
        lines(fixture.passive_t)
        fixture.talker.dataReceived(b"ne\nwhole\n")
        self.assertEqual(lines(fixture.passive_t), ["<talker> whole"])

    def test_nothing_left_scheduled(self) -> None:
        """A connection lost while reading is held leaves no DelayedCall behind."""
        fixture = RoomFixture()
        fixture.talker.dataReceived(b"\n" * 100)
        fixture.talker.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(
            [c for c in fixture.clock.getDelayedCalls() if c.func == fixture.talker._read_again],
            [],
        )


class JoinChurnTests(SynchronousTestCase):
    """Reconnecting does not refill a budget: joins are limited per address."""

    def test_connect_nick_quit_loop_is_limited(self) -> None:
        """From one address, past the burst a join is refused (no notice to the room) until the
        interval has passed; another address joins meanwhile."""
        from tcpfiles.chat.room import JOIN_BURST, JOIN_INTERVAL

        clock = task.Clock()
        factory = make_factory(clock)
        watcher, watcher_t = connect(factory, host="192.0.2.99", port=1)
        watcher.dataReceived(b"/nick watcher\n")
        lines(watcher_t)
        refused = 0
        for n in range(int(JOIN_BURST) + 20):
            churner, churner_t = connect(factory, port=1000 + n)
            churner.dataReceived(f"/nick c{n}\n".encode())
            if any("too many joins" in line for line in lines(churner_t)):
                refused += 1
            churner.dataReceived(b"/quit\n")
            churner.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(refused, 20)
        notices = lines(watcher_t)
        self.assertEqual(len([n for n in notices if n.endswith("joined")]), int(JOIN_BURST))
        other, other_t = connect(factory, host="198.51.100.1", port=2)
        other.dataReceived(b"/nick other\n")
        self.assertIn("welcome", " ".join(lines(other_t)))
        clock.advance(JOIN_INTERVAL)
        again, again_t = connect(factory, port=5000)
        again.dataReceived(b"/nick again\n")
        self.assertIn("welcome", " ".join(lines(again_t)))
