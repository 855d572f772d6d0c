"""The said lines a chat relay has yet to post to the bus (:mod:`tcpfiles.chat.bus`).

Bounded twice: at most ``size`` lines wait (the oldest are dropped, and counted, beyond that),
and at most ``in_flight`` posts are sent and unanswered at once, so that a bus that answers
slowly, or not at all until its timeout, holds no more than that; the rest waits here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

__all__ = ["Outbox"]

Entry = tuple[int, str]  # (the line's number on this node, its payload)


class Outbox:
    """Said lines waiting to be posted, in order, in batches."""

    def __init__(self, size: int, batch: int, in_flight: int) -> None:
        self.size, self.batch, self.in_flight = size, batch, in_flight
        self._lines: deque[Entry] = deque()
        self.unanswered = 0  # posts sent and not answered yet
        self.dropped = 0  # lines dropped since last told (see :meth:`tell_dropped`)

    def __len__(self) -> int:
        return len(self._lines)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._lines)

    def add(self, entry: Entry) -> None:
        """One more line (the oldest is dropped if ``size`` wait already)."""
        self._lines.append(entry)
        self._bound()

    def take(self) -> list[Entry] | None:
        """The next batch to post, if any waits and fewer than ``in_flight`` are unanswered;
        the caller then calls :meth:`answered` or :meth:`failed` with it."""
        if not self._lines or self.unanswered >= self.in_flight:
            return None
        self.unanswered += 1
        return [self._lines.popleft() for _ in range(min(self.batch, len(self._lines)))]

    def answered(self) -> None:
        """A post taken went through."""
        self.unanswered -= 1

    def failed(self, batch: list[Entry]) -> None:
        """A post taken failed: its lines wait again, in order (by number) with the others."""
        self.unanswered -= 1
        self._lines = deque(sorted([*batch, *self._lines]))
        self._bound()

    def tell_dropped(self) -> int:
        """The lines dropped since last asked."""
        dropped, self.dropped = self.dropped, 0
        return dropped

    def _bound(self) -> None:
        while len(self._lines) > self.size:
            self._lines.popleft()
            self.dropped += 1
