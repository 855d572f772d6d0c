"""The file store: what the files protocol can ask of a served directory.

Everything goes through :func:`tcpfiles.tree.paths.open_beneath`.  Hashing is a
:class:`~tcpfiles.tree.hashing.Hasher`'s: off the reactor thread in bounded jobs, cached and
shared by file identity (device, inode, size, mtime_ns, ctime_ns), never by the path's spelling.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from tcpfiles.tree.filecache import OpenFiles
from tcpfiles.tree.hashing import Hasher, inline
from tcpfiles.tree.interfaces import IFileStore
from tcpfiles.tree.listing import TEMP_PREFIX, DirListing, Entry, open_listing
from tcpfiles.tree.paths import (
    Exhausted,
    NotFound,
    PathError,
    Root,
    open_beneath,
    open_file_beneath,
    parse_path,
)

__all__ = ["TEMP_PREFIX", "Entry", "FileInfo", "FileStore", "OpenedFile"]

DeferToThread = Callable[..., defer.Deferred[Any]]


@dataclass(eq=False, slots=True)
class OpenedFile:
    """A regular file opened for reading; the holder must :meth:`close` it (once)."""

    fd: int
    size: int
    mtime: float
    #: Set when the descriptor is the store's, kept open for the next request: closing gives
    #: it back instead (:class:`~tcpfiles.tree.filecache.OpenFiles`).
    give_back: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def close(self) -> None:
        """Close the descriptor (or give it back to the store that keeps it)."""
        if self.give_back is None:
            os.close(self.fd)
        else:
            self.give_back()


@dataclass(frozen=True)
class FileInfo:
    """What STAT answers."""

    kind: str  # "file" or "dir"
    size: int | None
    mtime: float
    sha256: str | None


@lru_cache(maxsize=256)
def _served_parts(path: str) -> tuple[str, ...]:
    """``path``'s parts (:func:`~tcpfiles.tree.paths.parse_path`), none an upload's temporary;
    raises a ``PathError``.  A pure function of the text, asked again at every request for
    the same hot paths: the last 256 answers are kept (not the refusals: those raise), which
    spares a tenth of a small GET's Python (measured: docs/performance.md)."""
    parts = parse_path(path)
    if any(part.startswith(TEMP_PREFIX) for part in parts):
        raise NotFound("no such file or directory")
    return parts


@implementer(IFileStore)
class FileStore:
    """A read-only view of one directory tree, confined to it."""

    def __init__(
        self,
        root: Root,
        defer_to_thread: DeferToThread | None = None,
        hasher: Hasher | None = None,
        keep_open: int = 0,
    ) -> None:
        """``hasher`` may be shared by several stores (one cache, one bound); without one,
        a store has its own, running jobs with ``defer_to_thread`` (default: inline).  LIST's
        batches run with ``defer_to_thread``.  Up to ``keep_open`` small files are kept open
        between requests (0, the default: none; the servers' stores keep
        :data:`~tcpfiles.tree.filecache.MAX_FILES`)."""
        self.root = root
        self._defer_to_thread = defer_to_thread or inline  # LIST's batches
        self.hasher = hasher or Hasher(self._defer_to_thread)
        #: Small files kept open between requests (:mod:`tcpfiles.tree.filecache`).
        self.open_files = OpenFiles(root, max_files=keep_open)

    def open_file(self, path: str) -> OpenedFile:
        """Open a regular file for reading; raises a ``PathError``.

        A small file served before may come back on the descriptor kept open for it, once
        its path is checked to lead to the same file still (one ``lstat`` per level).
        """
        parts = _served_parts(path)
        cache = self.open_files
        hit = cache.get(parts)
        if hit is not None:
            entry, st = hit
            return OpenedFile(entry.fd, st.st_size, st.st_mtime, partial(cache.release, entry))
        try:
            fd, st = open_file_beneath(self.root, parts)
        except Exhausted:
            cache.clear()  # out of descriptors: give back the ones kept for speed
            raise
        kept = cache.keep(parts, fd, st)
        if kept is None:
            return OpenedFile(fd, st.st_size, st.st_mtime)
        return OpenedFile(fd, st.st_size, st.st_mtime, partial(cache.release, kept))

    def open_listing(self, path: str) -> DirListing:
        """Open a directory to be listed in batches (in the thread pool); raises ``PathError``.

        Temporaries, special files and symlinks leaving the root are not listed; the order is
        the directory's own, not sorted (see :mod:`tcpfiles.tree.listing`).
        """
        parts = _served_parts(path)
        return open_listing(self.root, parts, self._defer_to_thread)

    def stat(self, path: str, owner: Hashable = None) -> defer.Deferred[FileInfo]:
        """Describe a file (with its sha256) or a directory; fails with a ``PathError``.

        ``owner`` (a client address) is who the hash is for: hashes are bounded per owner.
        """
        try:
            parts = _served_parts(path)
            fd = open_beneath(self.root, parts, want="any")
        except PathError:
            return defer.fail()
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            os.close(fd)
            return defer.succeed(FileInfo("dir", None, st.st_mtime, None))

        def describe(digest: str) -> FileInfo:
            return FileInfo("file", st.st_size, st.st_mtime, digest)

        return self.hasher.sha256(fd, st, owner).addCallback(describe)
