"""The chat room as a plain object: members, nicknames, messages, history.  No I/O here.

A member is anything with a ``nick`` attribute and a ``send(line: str)`` method; the network
protocol is one kind of member, a test's list is another.  Every line the room sends is
already cleaned of control characters, so a member only has to deliver it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

NICK = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}\Z")

HELP = (
    "commands: /nick NAME, /who, /msg NICK TEXT, /me ACTION, /quit, /help; "
    "any other line is said to everyone"
)


class Member(Protocol):
    """Someone in (or entering) the room."""

    nick: str | None

    def send(self, line: str) -> None:
        """Deliver one line (without its newline)."""


def clean(text: str) -> str:
    """Drop control characters (other than TAB) so nobody can send terminal escapes."""
    return "".join(ch for ch in text if ch == "\t" or unicodedata.category(ch) not in ("Cc", "Cs"))


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

    def take(self) -> bool:
        """Spend one token if there is one."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


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

    # --- joining and leaving -------------------------------------------------------------

    def set_nick(self, member: Member, nick: str) -> None:
        """Join with ``nick``, or change to it; the member is told if it is refused."""
        nick = clean(nick).strip()
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
        if old is not None:
            del self.members[old.lower()]
        member.nick = nick
        self.members[nick.lower()] = member
        if old is None:
            member.send(f"*** welcome, {nick}; {len(self.members)} here. /help for commands")
            for line in self.history:
                member.send(line)
            self._broadcast(f"*** {nick} joined", exclude=member)
        elif old != nick:
            self._broadcast(f"*** {old} is now known as {nick}")

    def leave(self, member: Member, reason: str = "quit") -> None:
        """Remove a member (idempotent); the others are told."""
        self._buckets.pop(id(member), None)
        if member.nick is None or self.members.get(member.nick.lower()) is not member:
            return
        del self.members[member.nick.lower()]
        self._broadcast(f"*** {member.nick} left ({reason})")

    # --- talking ---------------------------------------------------------------------------

    def line(self, member: Member, text: str) -> bool:
        """Handle one line typed by a member; False when the member asked to quit."""
        text = clean(text)
        if text.startswith("/"):
            command, _, rest = text[1:].partition(" ")
            return self._command(member, command.lower(), rest.strip())
        if member.nick is None:
            member.send("!!! choose a nick first: /nick NAME")
        elif text.strip() and self._allowed(member):
            self._say(f"<{member.nick}> {text}", exclude=member)
        return True

    def _command(self, member: Member, command: str, rest: str) -> bool:
        if command == "quit":
            member.send("*** bye")
            return False
        if command == "help":
            member.send(f"*** {HELP}")
        elif command == "nick":
            self.set_nick(member, rest)
        elif member.nick is None:
            member.send("!!! choose a nick first: /nick NAME")
        elif command == "who":
            names = sorted((m.nick or "" for m in self.members.values()), key=str.lower)
            member.send(f"*** {len(names)} here: {', '.join(names)}")
        elif command == "me":
            if rest and self._allowed(member):
                self._say(f"* {member.nick} {rest}")
        elif command == "msg":
            self._private(member, rest)
        else:
            member.send(f"!!! unknown command /{command}; try /help")
        return True

    def _private(self, member: Member, rest: str) -> None:
        target_nick, _, text = rest.partition(" ")
        target = self.members.get(target_nick.lower())
        if target is None:
            member.send(f"!!! no one called {target_nick or '?'} is here")
        elif text.strip() and self._allowed(member):
            line = f"[{member.nick} -> {target.nick}] {text}"
            target.send(line)
            if target is not member:
                member.send(line)

    def _allowed(self, member: Member) -> bool:
        bucket = self._buckets.get(id(member))
        if bucket is None:
            bucket = self._buckets[id(member)] = TokenBucket(self._rate, self._burst, self._clock)
        if bucket.take():
            return True
        member.send("!!! slow down: message not sent")
        return False

    def _say(self, line: str, exclude: Member | None = None) -> None:
        self.history.append(line)
        self._broadcast(line, exclude)

    def _broadcast(self, line: str, exclude: Member | None = None) -> None:
        for member in list(self.members.values()):
            if member is not exclude:
                member.send(line)
