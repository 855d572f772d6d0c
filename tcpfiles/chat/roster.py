"""Who is in the room on the other nodes: each node tells its nicks on the bus when they change
and every few seconds; a node that stops telling is forgotten after ``ttl`` seconds."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Roster"]


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
