"""Rate limits as token buckets: how many bytes a connection, or an account, may move now.

A :class:`TokenBucket` fills at ``rate`` bytes per second up to ``burst`` bytes.  Whoever moves
bytes asks it first (:meth:`TokenBucket.request`): it is granted what the bucket holds at once,
or queued and called back once enough has come in.  Waiters are served in turn, first come first
served, so the connections sharing an account's bucket each get their share instead of the one
whose timer happens to fire first taking it all.  Bytes that have already arrived (an upload's)
are :meth:`~TokenBucket.spend`-t, which may put the bucket in debt: the next grant waits until
it is paid.

A :class:`Pace` asks several buckets at once (the connection's own ``--rate`` and its account's
``rate=``): a grant is what every one of them allows.  Nothing here sleeps or reads the wall
clock: the timers come from the clock given (the reactor, or ``task.Clock`` in tests).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import interfaces

__all__ = ["BURST_SECONDS", "MIN_BURST", "Pace", "TokenBucket", "as_pace"]

#: A full bucket holds this many seconds of its rate (the burst it lets through at once)...
BURST_SECONDS = 0.1
#: ...and never less than this: one read or a few packets go at once even at low rates.
MIN_BURST = 64 * 1024
#: A waiter is woken once the bucket holds this part of a tenth of a second's worth (or all it
#: wants): about 1 / (STEP * BURST_SECONDS) = 40 wake-ups a second for a busy bucket...
STEP = 0.25
#: ...and at least this many bytes: a slow rate sends fewer, larger grants.
MIN_STEP = 1024
#: Float arithmetic on the clock: a bucket this close to what is needed holds it.
_EPSILON = 1.0

Grant = Callable[[int], None]


class TokenBucket:
    """``rate`` bytes a second, ``burst`` at most at once (by default :data:`BURST_SECONDS` of
    the rate, at least :data:`MIN_BURST`); starts full."""

    def __init__(self, clock: interfaces.IReactorTime, rate: int, burst: int | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"a rate must be positive, got {rate}")
        self.clock = clock
        self.rate = rate
        self.burst = burst or max(int(rate * BURST_SECONDS), MIN_BURST)
        #: What a woken waiter gets at least (unless it wants less): a grant is worth a turn.
        self.step = max(int(rate * BURST_SECONDS * STEP), MIN_STEP)
        self._tokens = float(self.burst)
        self._stamp = clock.seconds()
        self._waiting: deque[tuple[int, Grant]] = deque()
        self._timer: interfaces.IDelayedCall | None = None

    def available(self) -> float:
        """The bytes the bucket holds now (negative: in debt)."""
        now = self.clock.seconds()
        if now > self._stamp:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        return self._tokens

    def request(self, wanted: int, granted: Grant) -> int:
        """Up to ``wanted`` bytes now (taken from the bucket), or 0: ``granted(n)`` is called
        later with the bytes taken for the caller, in turn with the other waiters.  A caller
        that no longer wants them :meth:`withdraw`-s."""
        if not self._waiting:
            got = self._take(wanted)
            if got:
                return got
        self._waiting.append((wanted, granted))
        self._arm()
        return 0

    def withdraw(self, granted: Grant) -> None:
        """Forget a waiter (its connection is gone)."""
        for entry in self._waiting:
            if entry[1] == granted:
                self._waiting.remove(entry)
                break
        if not self._waiting and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def spend(self, nbytes: int) -> None:
        """Count bytes that moved without asking (an upload's, already read): maybe a debt."""
        self.available()
        self._tokens -= nbytes

    def refund(self, nbytes: int) -> None:
        """Give back bytes taken and not used."""
        self._tokens = min(float(self.burst), self._tokens + nbytes)

    def _take(self, wanted: int) -> int:
        tokens = self.available()
        if tokens + _EPSILON < min(wanted, self.step):
            return 0
        got = min(wanted, max(1, int(tokens + 1e-6)))
        self._tokens -= got
        return got

    def _arm(self) -> None:
        if self._timer is not None or not self._waiting:
            return
        need = min(self._waiting[0][0], self.step)
        delay = max(0.0, (need - self.available()) / self.rate)
        self._timer = self.clock.callLater(delay, self._wake)

    def _wake(self) -> None:
        """Serve the waiters in turn while the bucket holds enough for the next one."""
        self._timer = None
        while self._waiting:
            wanted, granted = self._waiting[0]
            got = self._take(wanted)
            if not got:
                break
            self._waiting.popleft()
            granted(got)  # may ask again: it goes to the back of the queue
        self._arm()

    def __repr__(self) -> str:
        return f"<TokenBucket {self.rate} B/s, burst {self.burst}, {len(self._waiting)} waiting>"


class Pace:
    """Several buckets asked together: a grant is what all of them allow now.

    One request at a time: a producer asks, gets bytes now or a callback later.
    """

    def __init__(self, buckets: Sequence[TokenBucket]) -> None:
        self.buckets = tuple(buckets)
        #: While waiting: the bucket waited on, its callback, and what the earlier ones gave.
        self._waiting: tuple[TokenBucket, Grant, int, int] | None = None

    def request(self, wanted: int, granted: Grant) -> int:
        """Up to ``wanted`` bytes now, or 0: ``granted(n)`` is called later (see
        :meth:`TokenBucket.request`); :meth:`cancel` if it is no longer wanted."""
        return self._from(0, wanted, granted)

    def _from(self, index: int, held: int, granted: Grant) -> int:
        """Ask ``buckets[index:]`` for ``held`` bytes, which the earlier ones gave already."""
        for at in range(index, len(self.buckets)):
            bucket = self.buckets[at]

            def later(got: int, at: int = at, held: int = held) -> None:
                self._waiting = None
                self._settle(at, held, got)
                rest = self._from(at + 1, got, granted)
                if rest:
                    granted(rest)

            got = bucket.request(held, later)
            if not got:
                self._waiting = (bucket, later, at, held)
                return 0
            self._settle(at, held, got)
            held = got
        return held

    def _settle(self, at: int, held: int, got: int) -> None:
        """The bucket at ``at`` gave ``got`` of ``held``: the earlier ones take the rest back."""
        if got < held:
            for bucket in self.buckets[:at]:
                bucket.refund(held - got)

    def spend(self, nbytes: int) -> None:
        """Count bytes that moved without asking, in every bucket."""
        for bucket in self.buckets:
            bucket.spend(nbytes)

    def in_debt(self) -> bool:
        """Whether a bucket holds nothing: whatever moves next must wait."""
        return any(bucket.available() < _EPSILON for bucket in self.buckets)

    def cancel(self) -> None:
        """Stop waiting (the transfer is over): the earlier buckets get their bytes back."""
        if self._waiting is not None:
            bucket, later, at, held = self._waiting
            self._waiting = None
            bucket.withdraw(later)
            for earlier in self.buckets[:at]:
                earlier.refund(held)

    @property
    def waiting(self) -> bool:
        """Whether a grant is awaited."""
        return self._waiting is not None


def as_pace(buckets: Sequence[Any]) -> Pace | None:
    """A :class:`Pace` over the buckets given that are not None, or None: unlimited."""
    found = [bucket for bucket in buckets if bucket is not None]
    return Pace(found) if found else None
