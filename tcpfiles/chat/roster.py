"""The other nodes of a room, as seen from here: who is in the room there (each node tells its
nicks on the bus when they change and every few seconds; a node that stops telling is forgotten
after ``ttl`` seconds), and which of their said lines were delivered here already."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["Roster", "Seen", "said_lines"]

#: Nodes whose last line number is remembered (the least recently heard forgotten first).
SEEN_NODES = 10_000


class Roster:
    """The nicks of the other nodes, as each last told them."""

    def __init__(self, clock: Callable[[], float], ttl: float) -> None:
        self._clock = clock
        self._ttl = ttl
        self._nodes: dict[str, tuple[float, dict[str, str]]] = {}  # node -> (until, lower -> nick)

    def heard(self, node: str, nicks: object) -> None:
        """``node`` has these nicks now (a list of str; anything else is ignored)."""
        if isinstance(nicks, list):
            names = {nick.lower(): nick for nick in nicks if isinstance(nick, str)}
            self._nodes[node] = (self._clock() + self._ttl, names)

    def clear(self) -> None:
        """Forget every node (the bus is down: the room is local)."""
        self._nodes.clear()

    def _live(self) -> list[tuple[str, dict[str, str]]]:
        now = self._clock()
        for node in [n for n, (until, _) in self._nodes.items() if until <= now]:
            del self._nodes[node]
        return [(node, names) for node, (_, names) in self._nodes.items()]

    def nicks(self) -> list[str]:
        """Every nick on the other nodes."""
        return [nick for _, names in self._live() for nick in names.values()]

    def find(self, nick: str) -> tuple[str, str] | None:
        """(node, nick as written there) of ``nick`` (any case), or None."""
        for node, names in self._live():
            if nick.lower() in names:
                return node, names[nick.lower()]
        return None


class Seen:
    """The highest line number delivered here, by node: a line posted twice (its post failed,
    perhaps after Redis did it) is delivered once."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def again(self, message: dict[str, Any]) -> bool:
        """Whether this said line was delivered here already (if not, it is now)."""
        node, seq = str(message.get("node")), message.get("seq")
        if not isinstance(seq, int):
            return False
        if seq <= self._seen.get(node, 0):
            return True
        self._seen.pop(node, None)  # re-inserted: the oldest node is forgotten first
        self._seen[node] = seq
        while len(self._seen) > SEEN_NODES:
            del self._seen[next(iter(self._seen))]
        return False


def said_lines(entries: list[tuple[str, str]]) -> list[str]:
    """The said lines of stream entries (id, payload), each once (by node and number)."""
    lines, seen = [], set()
    for _, payload in entries:
        try:
            message = json.loads(payload)
            said, key = message.get("said"), (message.get("node"), message.get("seq"))
        except (ValueError, AttributeError, TypeError):
            continue
        if isinstance(said, str) and key not in seen:
            seen.add(key)
            lines.append(said)
    return lines
