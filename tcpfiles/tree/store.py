"""The file store: what the files protocol can ask of a served directory.

Everything goes through :func:`tcpfiles.tree.paths.open_beneath`.  Hashing is a
:class:`~tcpfiles.tree.hashing.Hasher`'s: off the reactor thread in bounded jobs, cached and
shared by file identity (device, inode, size, mtime_ns, ctime_ns), never by the path's spelling.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from tcpfiles.tree.hashing import Hasher, inline
from tcpfiles.tree.interfaces import IFileStore
from tcpfiles.tree.listing import TEMP_PREFIX, DirListing, Entry, open_listing
from tcpfiles.tree.paths import (
    NotFound,
    PathError,
    Root,
    open_beneath,
    open_file_beneath,
    parse_path,
)

__all__ = ["TEMP_PREFIX", "Entry", "FileInfo", "FileStore", "OpenedFile"]

DeferToThread = Callable[..., defer.Deferred[Any]]


@dataclass(frozen=True)
class OpenedFile:
    """A regular file opened for reading; the holder must :meth:`close` it."""

    fd: int
    size: int
    mtime: float

    def close(self) -> None:
        """Close the descriptor."""
        os.close(self.fd)


@dataclass(frozen=True)
class FileInfo:
    """What STAT answers."""

    kind: str  # "file" or "dir"
    size: int | None
    mtime: float
    sha256: str | None


def _check_parts(parts: tuple[str, ...]) -> None:
    if any(part.startswith(TEMP_PREFIX) for part in parts):
        raise NotFound("no such file or directory")


@implementer(IFileStore)
class FileStore:
    """A read-only view of one directory tree, confined to it."""

    def __init__(
        self,
        root: Root,
        defer_to_thread: DeferToThread | None = None,
        hasher: Hasher | None = None,
    ) -> None:
        """``hasher`` may be shared by several stores (one cache, one bound); without one,
        a store has its own, running jobs with ``defer_to_thread`` (default: inline).  LIST's
        batches run with ``defer_to_thread``."""
        self.root = root
        self._defer_to_thread = defer_to_thread or inline  # LIST's batches
        self.hasher = hasher or Hasher(self._defer_to_thread)

    def open_file(self, path: str) -> OpenedFile:
        """Open a regular file for reading; raises a ``PathError``."""
        parts = parse_path(path)
        _check_parts(parts)
        fd, st = open_file_beneath(self.root, parts)
        return OpenedFile(fd, st.st_size, st.st_mtime)

    def open_listing(self, path: str) -> DirListing:
        """Open a directory to be listed in batches (in the thread pool); raises ``PathError``.

        Temporaries, special files and symlinks leaving the root are not listed; the order is
        the directory's own, not sorted (see :mod:`tcpfiles.tree.listing`).
        """
        parts = parse_path(path)
        _check_parts(parts)
        return open_listing(self.root, parts, self._defer_to_thread)

    def stat(self, path: str, owner: Hashable = None) -> defer.Deferred[FileInfo]:
        """Describe a file (with its sha256) or a directory; fails with a ``PathError``.

        ``owner`` (a client address) is who the hash is for: hashes are bounded per owner.
        """
        try:
            parts = parse_path(path)
            _check_parts(parts)
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
