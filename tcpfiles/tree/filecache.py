"""Small files kept open between requests, checked with one ``lstat`` per path level at each use.

Opening a file below the root the safe way (:func:`tcpfiles.tree.paths.open_file_beneath`: one
``lstat`` and one ``open`` per level, an ``fstat``, a ``close`` per directory and, after the
read, for the file) was the largest cost of a small GET after the log (measured,
docs/performance.md).  :class:`OpenFiles` keeps the descriptors of the most recently served
small files.  A descriptor is reused only while its path still leads to the very same file:

- only a path whose walk met no symlink is kept (its wire parts are then its resolved path
  below the root, after every confinement check of the walk);
- at each use every level is looked at again with ``lstat`` relative to the root's descriptor:
  each directory must be the same one (device, inode, ctime), not a symlink, and the file the
  same file (device, inode, ctime), still a regular file.  A file replaced (a rename, an
  upload), removed, made a symlink (leaving the root or not), or changed in any way (its
  ctime moves on every write, chmod, chown and rename) is opened afresh by the full walk, and
  the old descriptor is closed once nobody reads from it.

Since the descriptor is the file itself, not a copy of its bytes, what is read is always the
file as it is now; the size and mtime come from the ``lstat`` of this request.
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict
from functools import lru_cache

from tcpfiles.core.fdlimit import KEPT_OPEN
from tcpfiles.tree.paths import Root

__all__ = ["MAX_FILE_BYTES", "MAX_FILES", "MAX_TOTAL_BYTES", "OpenFiles"]

#: Descriptors kept open at most, in the whole process (counted by the kernel's descriptor
#: check): the realm gives them to the server's root, the one served first.
MAX_FILES = KEPT_OPEN
#: Only files up to this size are kept (larger ones cost their transfer, not their opening).
MAX_FILE_BYTES = 256 * 1024
#: The sizes of the files kept add up to at most this (as they were when kept).
MAX_TOTAL_BYTES = 16 * 1024 * 1024

Identity = tuple[int, int, int]  # device, inode, ctime_ns


def _identity(st: os.stat_result) -> Identity:
    return st.st_dev, st.st_ino, st.st_ctime_ns


#: Paths up to this deep keep their levels' prefixes (:func:`_prefixes`): at most 4 KiB each,
#: 64 KiB per path and 4 MiB for the cache's 64 paths; a deeper one makes them at each use.
_PREFIXES_KEPT_DEPTH = 16


def _level_paths(parts: tuple[str, ...]) -> tuple[str, ...]:
    """Each level of ``parts`` as a path relative to the root: ``a``, ``a/b``, ``a/b/c``."""
    return tuple("/".join(parts[: depth + 1]) for depth in range(len(parts)))


_kept_prefixes = lru_cache(maxsize=MAX_FILES)(_level_paths)


def _prefixes(parts: tuple[str, ...]) -> tuple[str, ...]:
    """:func:`_level_paths`, kept for paths up to :data:`_PREFIXES_KEPT_DEPTH` deep."""
    if len(parts) <= _PREFIXES_KEPT_DEPTH:
        return _kept_prefixes(parts)
    return _level_paths(parts)


class _Entry:
    """One kept descriptor: the identity of each level of its path, and who reads from it."""

    __slots__ = ("fd", "levels", "size", "users", "dropped")

    def __init__(self, fd: int, levels: list[Identity], size: int) -> None:
        self.fd = fd
        self.levels = levels
        self.size = size
        self.users = 0
        self.dropped = False


class OpenFiles:
    """Descriptors of small files below ``root``, by path parts; bounded in count and bytes.

    :meth:`get` hands out a kept descriptor (still the path's file) with a fresh ``lstat``;
    :meth:`keep` offers a descriptor just opened by the full walk.  Each descriptor handed out
    must be given back with :meth:`release` (``OpenedFile.close`` does it); one that was
    dropped meanwhile is closed then.  Used from the reactor thread only.
    """

    def __init__(
        self,
        root: Root,
        max_files: int = MAX_FILES,
        max_file_bytes: int = MAX_FILE_BYTES,
        max_total_bytes: int = MAX_TOTAL_BYTES,
    ) -> None:
        self.root = root
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self._entries: OrderedDict[tuple[str, ...], _Entry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, parts: tuple[str, ...]) -> tuple[_Entry, os.stat_result] | None:
        """The kept descriptor of ``parts`` and the file's ``lstat`` now, if it is still the
        same file by the same path; else None (and a stale descriptor is dropped)."""
        entry = self._entries.get(parts)
        if entry is None:
            return None
        levels = self._levels(parts)
        if levels is None or levels[0] != entry.levels:
            self._drop(parts)
            return None
        self._entries.move_to_end(parts)
        entry.users += 1
        return entry, levels[1]

    def keep(self, parts: tuple[str, ...], fd: int, st: os.stat_result) -> _Entry | None:
        """Keep ``fd`` (just opened for ``parts`` by the full walk, ``st`` its ``fstat``) if the
        file is small and its path has no symlink; the entry now holds it (one user: the
        caller), or None and the caller keeps ``fd``."""
        if not self.max_files or not parts or st.st_size > self.max_file_bytes:
            return None
        if parts in self._entries:
            return None
        levels = self._levels(parts)
        if levels is None or levels[0][-1] != _identity(st):
            return None  # a symlink on the way, or the file changed since it was opened
        entry = _Entry(fd, levels[0], st.st_size)
        entry.users = 1
        self._entries[parts] = entry
        self._bytes += entry.size
        while len(self._entries) > self.max_files or self._bytes > self.max_total_bytes:
            self._drop(next(iter(self._entries)))
        return entry

    def release(self, entry: _Entry) -> None:
        """A reader is done with ``entry``'s descriptor."""
        entry.users -= 1
        if entry.dropped and entry.users == 0:
            os.close(entry.fd)

    def clear(self) -> None:
        """Drop every kept descriptor (out of descriptors: give them back)."""
        for parts in list(self._entries):
            self._drop(parts)

    def _drop(self, parts: tuple[str, ...]) -> None:
        entry = self._entries.pop(parts)
        self._bytes -= entry.size
        entry.dropped = True
        if entry.users == 0:
            os.close(entry.fd)

    def _levels(self, parts: tuple[str, ...]) -> tuple[list[Identity], os.stat_result] | None:
        """The identity of each level of ``parts`` below the root, looked at with ``lstat``
        (relative to the root's descriptor), and the last one's stat; None if a level is
        missing, a symlink, or not a directory (the last: not a regular file)."""
        root_fd = self.root.fd()
        levels: list[Identity] = []
        last = len(parts) - 1
        st = None
        for depth, where in enumerate(_prefixes(parts)):
            try:
                st = os.stat(where, dir_fd=root_fd, follow_symlinks=False)
            except OSError:
                return None
            wanted = stat.S_ISREG if depth == last else stat.S_ISDIR
            if not wanted(st.st_mode):
                return None
            levels.append(_identity(st))
        assert st is not None
        return levels, st
