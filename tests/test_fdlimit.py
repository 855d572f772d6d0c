"""The start-up descriptor check: raise the soft limit, warn once when connections cannot fit."""

from __future__ import annotations

import resource
import tempfile

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles import tap
from tcpfiles.core import fdlimit
from tcpfiles.core.connections import ConnectionTracker
from tcpfiles.core.fdlimit import FdLimitCheck, needed, raise_soft_limit, shortfall_warning
from tcpfiles.tree.paths import Root

NOFILE = resource.RLIMIT_NOFILE


class FakeLimits:
    """getrlimit/setrlimit over a pair of numbers; ``refuse`` lists soft limits that fail."""

    def __init__(self, soft: int, hard: int, refuse: tuple[int, ...] = ()) -> None:
        self.value = (soft, hard)
        self.refuse = refuse
        self.tried: list[int] = []

    def get(self, which: int) -> tuple[int, int]:
        assert which == NOFILE
        return self.value

    def set(self, which: int, value: tuple[int, int]) -> None:
        assert which == NOFILE
        self.tried.append(value[0])
        if value[0] in self.refuse:
            raise ValueError("not allowed to raise maximum limit")
        self.value = value


class RaiseTests(SynchronousTestCase):
    """The soft limit goes up to the hard one."""

    def test_raised_to_hard(self) -> None:
        """1024/4096 becomes 4096/4096."""
        limits = FakeLimits(1024, 4096)
        self.assertEqual(raise_soft_limit(limits.get, limits.set), (1024, 4096))
        self.assertEqual(limits.value, (4096, 4096))

    def test_already_at_hard(self) -> None:
        """Nothing to do, nothing set."""
        limits = FakeLimits(512, 512)
        self.assertEqual(raise_soft_limit(limits.get, limits.set), (512, 512))
        self.assertEqual(limits.tried, [])

    def test_unlimited_hard_falls_back(self) -> None:
        """An unlimited hard limit is capped by the kernel: a refused value tries a lower one,
        and if every one is refused the limit stays as it was."""
        inf = resource.RLIM_INFINITY
        targets = fdlimit._targets(inf)
        limits = FakeLimits(1024, inf, refuse=tuple(targets[:1]))
        self.assertEqual(raise_soft_limit(limits.get, limits.set), (1024, targets[1]))
        self.assertEqual(limits.value, (targets[1], inf))
        stuck = FakeLimits(1024, inf, refuse=tuple(fdlimit._targets(inf)))
        self.assertEqual(raise_soft_limit(stuck.get, stuck.set), (1024, 1024))

    def test_real_process_limit_is_not_lowered(self) -> None:
        """On the real process the soft limit only ever goes up."""
        soft, _hard = resource.getrlimit(NOFILE)
        before, now = raise_soft_limit()
        self.assertEqual(before, soft)
        self.assertGreaterEqual(now, soft)


class WarningTests(SynchronousTestCase):
    """The warning appears exactly when the connections cannot fit."""

    def test_fits(self) -> None:
        """1024 connections fit in 3168 descriptors (3 each + 32 + 64 kept open) and more."""
        self.assertEqual(needed(1024), 3168)
        self.assertIsNone(shortfall_warning(3168, 1024))
        self.assertIsNotNone(shortfall_warning(3167, 1024))
        self.assertIsNone(shortfall_warning(resource.RLIM_INFINITY, 10**6))

    def test_too_small(self) -> None:
        """1024 connections in 1024 descriptors: a warning that says what to do."""
        text = shortfall_warning(1024, 1024)
        assert text is not None
        for expected in ("(1024)", "3168", "ulimit -n 3168", "--max-connections", "309"):
            self.assertIn(expected, text)

    def test_service_sums_behaviours_and_warns_once(self) -> None:
        """Trackers added after the check was made count too; one warning, the root opened."""
        trackers = [ConnectionTracker(max_total=300)]
        root = Root.at(tempfile.mkdtemp())
        limits = FakeLimits(600, 700)
        check = FdLimitCheck(trackers, root, limits.get, limits.set)
        trackers.append(ConnectionTracker(max_total=100))
        with capturedLogs() as events:
            check.privilegedStartService()
            check.startService()
        warnings = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn("(700) is below the 1296 that 400 connections", formatEvent(warnings[0]))
        self.assertIn(
            "raised the file descriptor limit from 600 to 700",
            str([formatEvent(e) for e in events]),
        )
        self.assertEqual(len(root._fd), 1)

    def test_no_warning_when_it_fits(self) -> None:
        """A big enough limit: no warning."""
        limits = FakeLimits(4096, 4096)
        check = FdLimitCheck([ConnectionTracker(max_total=1024)], None, limits.get, limits.set)
        with capturedLogs() as events:
            check.privilegedStartService()
        self.assertEqual([e for e in events if e["log_level"] is LogLevel.warn], [])


class TapTests(SynchronousTestCase):
    """makeService runs the check before any listener binds."""

    def test_check_comes_first(self) -> None:
        """The first child of the service is the descriptor check, over every tracker."""
        options = tap.Options()
        options.parseOptions(["--root", tempfile.mkdtemp(), "--serve", "echo"])
        top = tap.makeService(options, reactor=MemoryReactorClock())
        first = list(top)[0]
        self.assertIsInstance(first, FdLimitCheck)
        self.assertEqual(first.total_connections(), 1024 * 2)
