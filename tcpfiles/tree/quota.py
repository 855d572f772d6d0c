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

from tcpfiles.tree.paths import PathError, Root
from tcpfiles.tree.store import TEMP_PREFIX

__all__ = ["SCAN_LIMIT", "OverQuota", "Quota", "Uncountable", "Usage", "count_usage"]

#: Entries (files and directories) a root's first count walks at most; past it, uploads with a
#: quota are refused ``busy`` rather than stall the server (a million lstat calls: about 2 s).
SCAN_LIMIT = 1_000_000


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
    hold on top (``held``); shared by every account whose root it is."""

    def __init__(self, root: Root) -> None:
        self.root = root
        self.used: int | None = None
        self.held = 0

    def counted(self) -> int:
        """Bytes stored, counted now if they never were."""
        if self.used is None:
            self.used = count_usage(self.root)
        return self.used


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
