"""Token buckets and paces (tcpfiles.core.rates), on a fake clock."""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.core.rates import MIN_BURST, Pace, TokenBucket, as_pace

MIB = 1 << 20


class TokenBucketTests(SynchronousTestCase):
    """A bucket grants what it holds at once, then calls back waiters in turn as it refills."""

    def setUp(self) -> None:
        self.clock = task.Clock()

    def test_burst_then_waits_for_refill(self) -> None:
        """Full at first (0.1 s of the rate), then a waiter is called back once a step has come
        in: 2 MiB/s gives 52428 bytes 25 ms later."""
        bucket = TokenBucket(self.clock, 2 * MIB)
        assert bucket.burst == int(2 * MIB * 0.1) and bucket.step == 52428
        assert bucket.request(10 * MIB, self.fail) == bucket.burst
        got: list[int] = []
        assert bucket.request(10 * MIB, got.append) == 0
        self.clock.advance(0.024)
        assert got == []
        self.clock.advance(0.001)
        assert got and abs(got[0] - bucket.step) <= 2

    def test_small_rates_have_a_floor_burst(self) -> None:
        """A slow bucket still lets MIN_BURST through at once, then 1 KiB grants."""
        bucket = TokenBucket(self.clock, 100)
        assert bucket.burst == MIN_BURST and bucket.step == 1024
        with self.assertRaises(ValueError):
            TokenBucket(self.clock, 0)

    def test_average_over_a_second(self) -> None:
        """A consumer that always wants more gets the rate, within the burst, each second."""
        bucket = TokenBucket(self.clock, 2 * MIB)
        total = [bucket.request(MIB, self.fail)]

        def granted(n: int) -> None:
            total.append(n)
            more = bucket.request(MIB, granted)
            if more:
                granted(more)

        assert bucket.request(MIB, granted) == 0
        for _ in range(400):
            self.clock.advance(0.01)
        assert abs(sum(total) - (bucket.burst + 8 * MIB)) < bucket.step + 16

    def test_waiters_are_served_in_turn(self) -> None:
        """Two consumers sharing a bucket each get half: first come, first served, each going to
        the back of the queue after its grant."""
        bucket = TokenBucket(self.clock, MIB)
        bucket.request(bucket.burst, self.fail)  # empty it
        got = {"a": 0, "b": 0}

        def consumer(name: str):
            def granted(n: int) -> None:
                got[name] += n
                assert bucket.request(MIB, granted) == 0

            return granted

        for name in ("a", "b"):
            assert bucket.request(MIB, consumer(name)) == 0
        for _ in range(1000):
            self.clock.advance(0.01)
        assert abs(got["a"] - got["b"]) <= 2 * bucket.step  # one grant (steps of 10 ms)
        assert abs(got["a"] + got["b"] - 10 * MIB) <= bucket.step

    def test_spend_puts_it_in_debt(self) -> None:
        """Bytes spent without asking (an upload's) are paid back before the next grant."""
        bucket = TokenBucket(self.clock, MIB)
        bucket.spend(bucket.burst + MIB)  # a second of debt
        got: list[int] = []
        assert bucket.request(1, got.append) == 0
        self.clock.advance(0.99)
        assert got == []
        self.clock.advance(0.02)
        assert got == [1]

    def test_withdraw_forgets_a_waiter(self) -> None:
        """A waiter withdrawn is never called, and no timer is left behind."""
        bucket = TokenBucket(self.clock, MIB)
        bucket.request(bucket.burst, self.fail)
        assert bucket.request(10, self.fail) == 0
        assert len(self.clock.getDelayedCalls()) == 1
        bucket.withdraw(self.fail)
        assert self.clock.getDelayedCalls() == []
        self.clock.advance(10)


class PaceTests(SynchronousTestCase):
    """A pace asks several buckets: it grants what all of them allow."""

    def setUp(self) -> None:
        self.clock = task.Clock()

    def test_the_smallest_wins_and_the_rest_is_given_back(self) -> None:
        """A connection bucket with plenty and an account bucket with little: the grant is the
        little, and the connection bucket gets the difference back."""
        own, shared = TokenBucket(self.clock, 8 * MIB), TokenBucket(self.clock, MIB)
        shared.request(shared.burst - 30000, self.fail)
        pace = Pace([own, shared])
        assert pace.request(MIB, self.fail) == 30000
        assert own.available() == own.burst - 30000

    def test_waits_on_the_empty_one_then_grants(self) -> None:
        """An empty bucket makes the pace wait; its grant goes through the later buckets."""
        own, shared = TokenBucket(self.clock, MIB), TokenBucket(self.clock, 4 * MIB)
        own.request(own.burst, self.fail)
        pace = Pace([own, shared])
        got: list[int] = []
        assert pace.request(MIB, got.append) == 0 and pace.waiting
        self.clock.advance(0.1)
        assert got and not pace.waiting

    def test_cancel_gives_back_what_earlier_buckets_gave(self) -> None:
        """Cancelled while waiting on the second bucket: the first gets its bytes back."""
        own, shared = TokenBucket(self.clock, MIB), TokenBucket(self.clock, MIB)
        shared.request(shared.burst, self.fail)
        pace = Pace([own, shared])
        assert pace.request(5000, self.fail) == 0
        assert own.available() == own.burst - 5000
        pace.cancel()
        assert own.available() == own.burst and not pace.waiting
        assert self.clock.getDelayedCalls() == []

    def test_as_pace(self) -> None:
        """None for no buckets: unlimited."""
        assert as_pace([None, None]) is None
        bucket = TokenBucket(self.clock, MIB)
        pace = as_pace([None, bucket])
        assert pace is not None and pace.buckets == (bucket,)
