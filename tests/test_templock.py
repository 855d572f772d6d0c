"""Locked upload temporaries: a sweep that wins the race between create and lock is survived."""

from __future__ import annotations

import fcntl
import os

from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.tree import templock
from tests.helpers import temporary_directory


class CreateLockedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = temporary_directory(self)
        self.parent = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, self.parent)

    def _create_with(self, sweep_first) -> tuple[str, int]:
        """create_locked, with ``sweep_first(fd)`` run instead of its first flock."""
        calls = []
        real = fcntl.flock

        def flock(fd: int, operation: int) -> None:
            calls.append(fd)
            if len(calls) == 1:
                sweep_first(fd)
            else:
                real(fd, operation)

        self.patch(templock.fcntl, "flock", flock)
        name, fd = templock.create_locked(self.parent, ".tcpfiles-", ".part")
        self.addCleanup(os.close, fd)
        self.assertEqual(len(calls), 2)
        return name, fd

    def test_a_sweep_holding_the_lock_makes_it_try_another_name(self) -> None:
        def sweeper_holds_it(fd: int) -> None:
            raise BlockingIOError

        name, fd = self._create_with(sweeper_holds_it)
        self.assertEqual(len(os.listdir(self.directory)), 2)  # the sweeper removes the other
        self.assertTrue(os.path.exists(os.path.join(self.directory, name)))

    def test_a_sweep_that_removed_it_makes_it_try_another_name(self) -> None:
        def sweeper_removed_it(fd: int) -> None:
            [first] = os.listdir(self.directory)
            os.unlink(os.path.join(self.directory, first))

        name, fd = self._create_with(sweeper_removed_it)
        self.assertEqual(os.listdir(self.directory), [name])
        self.assertFalse(templock.remove_unlocked(os.path.join(self.directory, name)))
