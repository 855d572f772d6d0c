"""Storage quotas: how many bytes an account may keep below its root (``quota=`` in the users
file, ``--quota`` for every account).

What a root holds is counted once, the first time an upload to it needs to know (a walk of the
root, bounded by :data:`SCAN_LIMIT` entries), and then kept up to date by the uploads that
complete there.  An upload declares its size before its body is sent: :meth:`Quota.reserve`
holds what it would add (its size, less the size of the file it replaces) against the quota
while it is in flight, so that two uploads at once cannot both squeeze into the same free
bytes; the hold is released when it is published (and counted) or fails.  Files changed below
the root by anything but tcpfiles' uploads are seen at the next start.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcpfiles.tree.paths import PathError, Root
from tcpfiles.tree.store import TEMP_PREFIX

__all__ = [
    "RECOUNT_AFTER",
    "SCAN_LIMIT",
    "OverQuota",
    "Quota",
    "Uncountable",
    "Usage",
    "count_usage",
]

#: Entries (files and directories) a root's first count walks at most; past it, uploads with a
#: quota are refused ``busy`` rather than stall the server (a million lstat calls: about 2 s).
SCAN_LIMIT = 1_000_000
#: Seconds a root found too big to count is taken as such before it is counted again.
RECOUNT_AFTER = 60.0

log = Logger(namespace="tcpfiles.tree")


class OverQuota(PathError):
    """The upload would take the account past its storage quota."""

    code = "over-quota"


class Uncountable(PathError):
    """The root is too big to count: the quota cannot be checked."""

    code = "busy"


def count_usage(root: Root, limit: int = SCAN_LIMIT) -> int:
    """Bytes of the regular files below ``root`` (symlinks are not followed; upload temporaries
    are not counted: uploads in flight are held apart).  :class:`Uncountable` past ``limit``
    entries."""
    total = 0
    seen = 0
    for directory, dirs, files in os.walk(root.real):  # does not follow symlinks
        seen += len(dirs) + len(files)
        if seen > limit:
            raise Uncountable(f"more than {limit} files below the account's root to count")
        for name in files:
            if name.startswith(TEMP_PREFIX):
                continue
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


class Usage:
    """What one root holds (``used``, counted at first need) and what uploads in flight to it
    hold on top (``held``); shared by every account whose root it is.

    A root too big to count (:class:`Uncountable`) is remembered as such: uploads are answered
    ``busy`` without walking it again, and it is counted again :data:`RECOUNT_AFTER` seconds of
    ``clock`` later (never without a clock), in ``defer_to_thread`` when given (``busy`` until
    that count is done), not on the reactor's thread."""

    def __init__(
        self,
        root: Root,
        clock: IReactorTime | None = None,
        defer_to_thread: Callable[..., Deferred[Any]] | None = None,
        limit: int = SCAN_LIMIT,
    ) -> None:
        self.root = root
        self.used: int | None = None
        self.held = 0
        self.clock = clock
        self.limit = limit
        self._defer_to_thread = defer_to_thread
        self._uncountable: str | None = None  # why the last count failed
        self._recount_at = 0.0
        self._counting = False

    def counted(self) -> int:
        """Bytes stored, counted now if they never were (:class:`Uncountable`: not known)."""
        if self.used is not None:
            return self.used
        if self._uncountable is None:  # the first count: here, now (bounded by the limit)
            return self._count()
        if self._counting or self.clock is None or self.clock.seconds() < self._recount_at:
            raise Uncountable(self._uncountable)
        if self._defer_to_thread is None:
            return self._count()
        self._counting = True
        d = self._defer_to_thread(count_usage, self.root, self.limit)
        d.addCallbacks(self._recounted, self._not_recounted)
        if self.used is not None:  # counted at once (an inline defer_to_thread)
            return self.used
        raise Uncountable(self._uncountable)

    def _count(self) -> int:
        try:
            self.used = count_usage(self.root, self.limit)
        except Uncountable as exc:
            self._gave_up(str(exc))
            raise
        return self.used

    def _gave_up(self, why: str) -> None:
        self._uncountable = why
        if self.clock is not None:
            self._recount_at = self.clock.seconds() + RECOUNT_AFTER

    def _recounted(self, used: int) -> None:
        self._counting = False
        self.used, self._uncountable = used, None

    def _not_recounted(self, failure: Failure) -> None:
        self._counting = False
        if not failure.check(Uncountable):
            log.failure("counting the files below {root}", failure, root=self.root.real)
        self._gave_up(str(failure.value))


class Quota:
    """An account's storage limit over its root's :class:`Usage`."""

    def __init__(self, limit: int, usage: Usage) -> None:
        self.limit = limit
        self.usage = usage

    def reserve(self, size: int, replaced: int) -> int:
        """Hold room for an upload of ``size`` bytes replacing ``replaced`` (0: a new file);
        the bytes held, to :meth:`release` later.  :class:`OverQuota` when it does not fit."""
        used = self.usage.counted()
        added = size - replaced
        if added > 0 and used + self.usage.held + added > self.limit:
            raise OverQuota(
                f"{size} bytes would take your account over its quota of {self.limit} bytes "
                f"({used} stored, {self.usage.held} in uploads under way)"
            )
        held = max(added, 0)
        self.usage.held += held
        return held

    def release(self, held: int) -> None:
        """An upload is over: what :meth:`reserve` held is free again."""
        self.usage.held -= held

    def stored(self, added: int) -> None:
        """An upload was published: the root holds ``added`` more bytes (fewer, if negative)."""
        if self.usage.used is not None:
            self.usage.used = max(0, self.usage.used + added)
