"""Upload temporaries locked while they are live, so that a sweep of stale ones spares them.

An upload holds an exclusive ``flock`` on its temporary from creation until the temporary is
published or removed (:func:`create_locked`); a sweep removes only what it can lock
(:func:`remove_unlocked`).  A lock belongs to the open file, so it protects the temporary from
every other process's sweep and from this process's own, and it is gone when its process dies:
a crashed server's leftovers are still swept.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets

__all__ = ["create_locked", "remove_unlocked"]


def create_locked(parent: int, prefix: str, suffix: str) -> tuple[str, int]:
    """A new temporary ``PREFIX<random>SUFFIX`` in the directory ``parent`` (a descriptor),
    open for writing and locked: (its name, its descriptor).

    Between ``open`` and ``flock`` another process's sweep may lock and remove it: then the lock
    is refused, or the file found unlinked once locked, and another name is tried.
    """
    for _attempt in range(8):
        name = f"{prefix}{secrets.token_hex(8)}{suffix}"
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=parent,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if os.fstat(fd).st_nlink:
            return name, fd
        os.close(fd)
    raise OSError(errno.EBUSY, "could not create a locked upload temporary")


def remove_unlocked(path: str) -> bool:
    """Remove ``path`` while holding its lock; False when it is locked (live) or gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
        return True
    except OSError:  # BlockingIOError: an upload in flight holds it
        return False
    finally:
        os.close(fd)
