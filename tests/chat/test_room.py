"""The chat room as a plain object, with members that just collect lines."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.chat.room import SLOW_DOWN, Room, clean


class Person:
    """A member that keeps what it is sent."""

    def __init__(self) -> None:
        self.nick: str | None = None
        self.got: list[str] = []

    def send(self, line: str) -> None:
        self.got.append(line)


def joined(room: Room, nick: str) -> Person:
    person = Person()
    room.set_nick(person, nick)
    person.got.clear()
    return person


class RoomTests(SynchronousTestCase):
    """The chat room as a plain object."""

    def setUp(self) -> None:
        self.room = Room(history=3)

    def test_join_say_and_leave(self) -> None:
        """Join notices, plain lines to everyone else with the nick, leave notices."""
        ann = joined(self.room, "ann")
        bob = Person()
        self.room.set_nick(bob, "bob")
        assert ann.got == ["*** bob joined"]
        assert bob.got[0].startswith("*** welcome, bob; 2 here")
        self.room.line(ann, "hello")
        assert bob.got[-1] == "<ann> hello"
        assert "<ann> hello" not in ann.got  # not echoed to the sender
        self.room.leave(bob)
        assert ann.got[-1] == "*** bob left (quit)"
        self.room.leave(bob)  # idempotent
        assert ann.got[-1] == "*** bob left (quit)"

    def test_nicks_are_validated_and_unique(self) -> None:
        """Bad nicks are refused; a nick is unique regardless of case; renames are announced."""
        ann = joined(self.room, "ann")
        other = Person()
        for bad in ["", "1abc", "a b", "x" * 33, "ann\x1b[31m", "é"]:
            self.room.set_nick(other, bad)
            assert other.nick is None
        self.room.set_nick(other, "ANN")
        assert other.got[-1] == "!!! the nick ANN is taken"
        self.room.set_nick(other, "bob")
        self.room.set_nick(other, "robert")
        assert ann.got[-1] == "*** bob is now known as robert"
        self.room.set_nick(ann, "Ann")  # a member may change the case of its own nick
        assert ann.nick == "Ann"

    def test_nothing_before_a_nick(self) -> None:
        """Without a nick, only /nick, /help and /quit work."""
        anon = Person()
        self.room.line(anon, "hello")
        self.room.line(anon, "/who")
        assert anon.got == ["!!! choose a nick first: /nick NAME"] * 2
        self.room.line(anon, "/help")
        assert anon.got[-1].startswith("*** commands:")

    def test_history_replayed_to_newcomers(self) -> None:
        """The last N said lines (not private ones, not notices) greet a newcomer."""
        ann = joined(self.room, "ann")
        for n in range(5):
            self.room.line(ann, f"m{n}")
        self.room.line(ann, "/me waves")
        late = Person()
        self.room.set_nick(late, "late")
        assert late.got[1:] == ["<ann> m3", "<ann> m4", "* ann waves"]

    def test_who_msg_me_quit_unknown(self) -> None:
        """The commands do what /help says."""
        ann, bob = joined(self.room, "ann"), joined(self.room, "bob")
        self.room.line(ann, "/who")
        assert ann.got[-1] == "*** 2 here: ann, bob"
        self.room.line(ann, "/msg BOB psst, hi")
        assert bob.got[-1] == "[ann -> bob] psst, hi" == ann.got[-1]
        self.room.line(ann, "/msg nobody x")
        assert ann.got[-1] == "!!! no one called nobody is here"
        self.room.line(ann, "/me dances")
        assert bob.got[-1] == "* ann dances" == ann.got[-1]
        self.room.line(ann, "/frob")
        assert ann.got[-1] == "!!! unknown command /frob; try /help"
        assert self.room.line(ann, "/quit") is False
        assert ann.got[-1] == "*** bye"

    def test_control_characters_are_escaped(self) -> None:
        """Terminal escapes never reach anyone raw: they are shown as escapes; TAB survives."""
        ann, bob = joined(self.room, "ann"), joined(self.room, "bob")
        self.room.line(ann, "red\x1b[31m\ttext\x07\x00")
        assert bob.got[-1] == "<ann> red\\u001b[31m\ttext\\u0007\\u0000"
        assert clean("a\u0085b\u009bc") == "a\\u0085b\\u009bc"

    def test_flood_control(self) -> None:
        """Past the burst, lines are refused until the bucket refills with time."""
        now = [0.0]
        room = Room(clock=lambda: now[0], rate=2.0, burst=3.0)
        ann, bob = joined(room, "ann"), joined(room, "bob")
        for n in range(5):
            room.line(ann, f"m{n}")
        assert [line for line in bob.got if line.startswith("<")] == [
            "<ann> m0",
            "<ann> m1",
            "<ann> m2",
        ]
        assert ann.got.count(SLOW_DOWN) == 1  # told once, not once per refused line
        now[0] += 1.0  # two more tokens
        room.line(ann, "later")
        assert bob.got[-1] == "<ann> later"
