"""The chat room as a plain object: members, nicknames, messages, history.  No I/O here.

A member is anything with a ``nick`` attribute and a ``send(line: str)`` method; the network
protocol is one kind of member, a test's list is another.  Every line the room sends is
already made safe to display (:func:`clean`), so a member only has to deliver it.

Flood control: every line a member sends (commands too, except ``/quit``) spends tokens from
that member's :class:`TokenBucket`; lines everyone sees or whose answer grows with the room cost
more (:data:`FANOUT_COST`, :func:`who_cost`).  A line over budget is dropped; the member is told
once, and not again until a line of theirs gets through.

A room may span processes: give it a :class:`Relay` (:mod:`tcpfiles.chat.bus` is one) and it
asks the relay before a nick is taken (the answer may come later), tells it what is said and
announced here, and delivers what the relay brings from elsewhere (:meth:`Room.deliver`).
Without one, nothing changes: a room in one process.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tcpfiles.core.text import escape_unsafe, unsafe_to_display

NICK = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}\Z")

#: Tokens a line costs: most lines cost one; ``/nick`` (a join or a rename, announced to everyone)
#: costs several; ``/who`` one more per :data:`WHO_NAMES_PER_TOKEN` members.  No cost exceeds the
#: bucket's size, so every command stays possible for a member who waits.
LINE_COST = 1.0
FANOUT_COST = 5.0
WHO_NAMES_PER_TOKEN = 25

SLOW_DOWN = "!!! slow down: line not sent; more are dropped without notice until you slow down"
BAD_NICK_CHARS = "!!! a nick may not contain control, format, invisible or private-use characters"

HELP = (
    "commands: /nick NAME, /who, /msg NICK TEXT, /me ACTION, /quit, /help; "
    "any other line is said to everyone"
)


class Member(Protocol):
    """Someone in (or entering) the room."""

    nick: str | None

    def send(self, line: str) -> None:
        """Deliver one line (without its newline)."""


class Relay(Protocol):
    """What carries a room to its other processes (:mod:`tcpfiles.chat.bus`)."""

    def claim(self, nick: str, joining: bool, done: Callable[[bool, list[str]], None]) -> None:
        """Ask for ``nick`` everywhere; ``done(taken, history)`` once known (now or later):
        ``taken`` true when it is ours, ``history`` the said lines a newcomer gets."""

    def release(self, nick: str) -> None:
        """``nick`` is no longer used here."""

    def said(self, line: str) -> None:
        """A line said here (it goes to history)."""

    def announced(self, line: str) -> None:
        """A notice here: a join, a leave, a rename."""

    def others(self) -> list[str]:
        """The nicks in the room elsewhere (for ``/who``)."""

    def elsewhere(self, nick: str) -> str | None:
        """``nick`` as written where it is, if it is elsewhere; None if not."""

    def private(self, nick: str, line: str) -> None:
        """Deliver a private line to ``nick``, elsewhere."""


def clean(text: str) -> str:
    r"""Make text safe to relay: what the files protocol deems unsafe becomes ``\uNNNN``; TAB stays.

    One rule for the whole code base (:func:`tcpfiles.core.text.unsafe_to_display`): terminal
    escapes, bidi controls, line/paragraph separators, zero-width and private-use characters
    are shown as visible escapes, never relayed raw.
    """
    return escape_unsafe(text, keep="\t")


def who_cost(members: int) -> float:
    """What ``/who`` costs in a room of ``members``: its answer grows with the room."""
    return FANOUT_COST + members // WHO_NAMES_PER_TOKEN


@dataclass
class TokenBucket:
    """Flood control: ``burst`` lines at once, refilled at ``rate`` lines a second."""

    rate: float
    burst: float
    clock: Callable[[], float]
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.stamp = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens (at most the burst) if there are that many; else spend none."""
        self._refill()
        cost = min(cost, self.burst)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def wait(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are there (0: now); spends nothing."""
        self._refill()
        return max(0.0, (min(cost, self.burst) - self.tokens) / self.rate)


#: Joins from one address: a burst of this many (a classroom behind one NAT), then one every
#: ``JOIN_INTERVAL`` seconds.
#: The flood budget is per connection, so connect, /nick, /quit in a loop cost nothing: 10
#: addresses sent each of 100 members 1,356 join/leave notices a second.
JOIN_BURST = 60.0
JOIN_INTERVAL = 1.0
#: Addresses whose joins are remembered at once (oldest forgotten first).
JOIN_ADDRESSES = 10_000


class Room:
    """One chat room."""

    def __init__(
        self,
        history: int = 20,
        clock: Callable[[], float] | None = None,
        rate: float = 5.0,
        burst: float = 20.0,
    ) -> None:
        self.members: dict[str, Member] = {}  # by lower-cased nick
        self.history: deque[str] = deque(maxlen=history)
        self._clock = clock or (lambda: 0.0)
        self._rate = rate
        self._burst = burst
        self._buckets: dict[int, TokenBucket] = {}
        self._told: set[int] = set()  # members told to slow down, until a line gets through
        self._joins: dict[str, TokenBucket] = {}  # by the member's address (insertion order)
        #: Messages sent so far, to everyone (lines, /me) or to one (/msg): for the metrics.
        self.messages = 0
        self.relay: Relay | None = None  # the room's other processes, if any
        self._pending: dict[int, Member] = {}  # members whose /nick the relay is asked about

    # --- joining and leaving -------------------------------------------------------------

    def set_nick(self, member: Member, nick: str) -> None:
        """Join with ``nick``, or change to it; the member is told if it is refused."""
        if any(map(unsafe_to_display, nick)):
            member.send(BAD_NICK_CHARS)
            return
        nick = nick.strip()
        if not NICK.match(nick):
            member.send(
                "!!! a nick is 1-32 letters, digits, '_', '.' or '-', starting with a letter"
            )
            return
        holder = self.members.get(nick.lower())
        if holder is not None and holder is not member:
            member.send(f"!!! the nick {nick} is taken")
            return
        old = member.nick
        if id(member) in self._pending:
            member.send("!!! your last /nick is still being checked")
            return
        if old is None and not self._may_join(member):
            return
        if self.relay is None or (old is not None and old.lower() == nick.lower()):
            self._take(member, nick, list(self.history))
            return
        self._pending[id(member)] = member
        self.relay.claim(
            nick, old is None, lambda ok, lines: self._claimed(member, nick, ok, lines)
        )

    def _claimed(self, member: Member, nick: str, ok: bool, history: list[str]) -> None:
        """The relay's answer about ``nick``: take it, or refuse (release it if the member left
        or someone here took it meanwhile)."""
        relay = self.relay
        if self._pending.pop(id(member), None) is None:
            if ok and relay is not None:
                relay.release(nick)  # the member left while we asked
            return
        holder = self.members.get(nick.lower())
        if not ok or (holder is not None and holder is not member):
            if ok and relay is not None:
                relay.release(nick)
            member.send(f"!!! the nick {nick} is taken")
            return
        self._take(member, nick, history)

    def _take(self, member: Member, nick: str, history: list[str]) -> None:
        """Give ``member`` the nick: a join (welcome, history) or a rename, announced."""
        old = member.nick
        if old is not None:
            del self.members[old.lower()]
            if self.relay is not None and old.lower() != nick.lower():
                self.relay.release(old)
        member.nick = nick
        self.members[nick.lower()] = member
        if old is None:
            here = len(self.members) + (len(self.relay.others()) if self.relay else 0)
            member.send(f"*** welcome, {nick}; {here} here. /help for commands")
            for line in history:
                member.send(line)
            self._announce(f"*** {nick} joined", exclude=member)
        elif old != nick:
            self._announce(f"*** {old} is now known as {nick}")

    def _may_join(self, member: Member) -> bool:
        """Spend a join from the member's address (``member.address``, when it has one)."""
        address = getattr(member, "address", None)
        if address is None:
            return True
        bucket = self._joins.pop(address, None)  # re-inserted: the dict stays in use order
        if bucket is None:
            bucket = TokenBucket(1 / JOIN_INTERVAL, JOIN_BURST, self._clock)
            while len(self._joins) >= JOIN_ADDRESSES:
                del self._joins[next(iter(self._joins))]
        self._joins[address] = bucket
        if bucket.take():
            return True
        member.send(f"!!! too many joins from your address; try again in {JOIN_INTERVAL:g} s")
        return False

    def leave(self, member: Member, reason: str = "quit") -> None:
        """Remove a member (idempotent); the others are told."""
        self._buckets.pop(id(member), None)
        self._told.discard(id(member))
        self._pending.pop(id(member), None)
        if member.nick is None or self.members.get(member.nick.lower()) is not member:
            return
        del self.members[member.nick.lower()]
        if self.relay is not None:
            self.relay.release(member.nick)
        self._announce(f"*** {member.nick} left ({reason})")

    # --- talking ---------------------------------------------------------------------------

    def line(self, member: Member, text: str) -> bool:
        """Handle one line typed by a member; False when the member asked to quit.

        Every line spends flood budget (``/quit`` excepted); one over budget is dropped.
        """
        if text.startswith("/"):
            command, _, rest = text[1:].partition(" ")
            command = clean(command.lower())
            if command == "quit":
                member.send("*** bye")
                return False
            if self.allowed(member, self._cost(command)):
                self._command(member, command, rest)
        elif self.allowed(member):
            text = clean(text)
            if member.nick is None:
                member.send("!!! choose a nick first: /nick NAME")
            elif text.strip():
                self._say(f"<{member.nick}> {text}", exclude=member)
        return True

    def _cost(self, command: str) -> float:
        if command == "nick":
            return FANOUT_COST
        if command == "who":
            return who_cost(len(self.members))
        return LINE_COST

    def _command(self, member: Member, command: str, rest: str) -> None:
        if command == "help":
            member.send(f"*** {HELP}")
        elif command == "nick":
            self.set_nick(member, rest)
        elif member.nick is None:
            member.send("!!! choose a nick first: /nick NAME")
        elif command == "who":
            names = [m.nick or "" for m in self.members.values()]
            names = sorted(names + (self.relay.others() if self.relay else []), key=str.lower)
            member.send(f"*** {len(names)} here: {', '.join(names)}")
        elif command == "me":
            rest = clean(rest).strip()
            if rest:
                self._say(f"* {member.nick} {rest}")
        elif command == "msg":
            self._private(member, clean(rest).strip())
        else:
            member.send(f"!!! unknown command /{command}; try /help")

    def _private(self, member: Member, rest: str) -> None:
        target_nick, _, text = rest.partition(" ")
        target = self.members.get(target_nick.lower())
        elsewhere = None
        if target is None and self.relay is not None:
            elsewhere = self.relay.elsewhere(target_nick)
        if target is None and elsewhere is None:
            member.send(f"!!! no one called {target_nick or '?'} is here")
        elif text.strip():
            shown = target.nick if target is not None else elsewhere
            line = f"[{member.nick} -> {shown}] {text}"
            self.messages += 1
            if target is not None:
                target.send(line)
            elif self.relay is not None:
                self.relay.private(target_nick, line)
            if target is not member:
                member.send(line)

    def refill_in(self, member: Member, cost: float = LINE_COST) -> float:
        """Seconds until the member may send a line of ``cost`` again (0: now)."""
        bucket = self._buckets.get(id(member))
        return 0.0 if bucket is None else bucket.wait(cost)

    def allowed(self, member: Member, cost: float = LINE_COST) -> bool:
        """Spend ``cost`` from the member's budget; False (and, once, a notice) when over it."""
        bucket = self._buckets.get(id(member))
        if bucket is None:
            bucket = self._buckets[id(member)] = TokenBucket(self._rate, self._burst, self._clock)
        if bucket.take(cost):
            self._told.discard(id(member))
            return True
        if id(member) not in self._told:
            self._told.add(id(member))
            member.send(SLOW_DOWN)
        return False

    def _say(self, line: str, exclude: Member | None = None) -> None:
        self.messages += 1
        self.history.append(line)
        self._broadcast(line, exclude)
        if self.relay is not None:
            self.relay.said(line)

    def _announce(self, line: str, exclude: Member | None = None) -> None:
        self._broadcast(line, exclude)
        if self.relay is not None:
            self.relay.announced(line)

    def deliver(self, line: str, said: bool) -> None:
        """A line from the room's other processes: to everyone here, as if said here (a said
        line goes to history too); never back to the relay."""
        if said:
            self.history.append(line)
        self._broadcast(line)

    def _broadcast(self, line: str, exclude: Member | None = None) -> None:
        for member in list(self.members.values()):
            if member is not exclude:
                member.send(line)
