"""The file store: what the files protocol can ask of a served directory.

Everything goes through :func:`tcpfiles.files.paths.open_beneath`.  Hashing runs in a thread
(``defer_to_thread`` is injected, so tests can run it inline) and is cached by
(path, device, inode, size, mtime_ns, ctime_ns); concurrent requests for the same file share one
computation.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from tcpfiles.files.listing import TEMP_PREFIX, DirListing, Entry, open_listing
from tcpfiles.files.paths import (
    FileChanging,
    NotFound,
    PathError,
    Root,
    open_beneath,
    open_file_beneath,
    parse_path,
)
from tcpfiles.interfaces import IFileStore

__all__ = ["TEMP_PREFIX", "Entry", "FileInfo", "FileStore", "OpenedFile"]

HASH_CHUNK = 1 << 20
HASH_CACHE_SIZE = 4096

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


def _sha256_of(fd: int) -> tuple[str, os.stat_result]:
    """Hash a whole file by descriptor; returns the digest and the stat it belongs to."""
    for _attempt in range(3):
        before = os.fstat(fd)
        digest = hashlib.sha256()
        offset = 0
        while chunk := os.pread(fd, HASH_CHUNK, offset):
            digest.update(chunk)
            offset += len(chunk)
        after = os.fstat(fd)
        if (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
            after.st_size,
            after.st_mtime_ns,
            after.st_ctime_ns,
        ) and offset == after.st_size:
            return digest.hexdigest(), after
    raise FileChanging("the file kept changing while it was hashed; try again")


@implementer(IFileStore)
class FileStore:
    """A read-only view of one directory tree, confined to it."""

    def __init__(self, root: Root, defer_to_thread: DeferToThread | None = None) -> None:
        self.root = root
        self._defer_to_thread = defer_to_thread or _inline
        self._hashes: OrderedDict[tuple[object, ...], str] = OrderedDict()
        self._hashing: dict[tuple[object, ...], list[defer.Deferred[str]]] = {}

    def open_file(self, path: str) -> OpenedFile:
        """Open a regular file for reading; raises a ``PathError``."""
        parts = parse_path(path)
        _check_parts(parts)
        fd, st = open_file_beneath(self.root, parts)
        return OpenedFile(fd, st.st_size, st.st_mtime)

    def open_listing(self, path: str) -> DirListing:
        """Open a directory to be listed in batches (in the thread pool); raises ``PathError``.

        Temporaries, special files and symlinks leaving the root are not listed; the order is
        the directory's own, not sorted (see :mod:`tcpfiles.files.listing`).
        """
        parts = parse_path(path)
        _check_parts(parts)
        return open_listing(self.root, parts, self._defer_to_thread)

    def stat(self, path: str) -> defer.Deferred[FileInfo]:
        """Describe a file (with its sha256) or a directory; fails with a ``PathError``."""
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

        return self._sha256(parts, fd, st).addCallback(describe)

    def _sha256(self, parts: tuple[str, ...], fd: int, st: os.stat_result) -> defer.Deferred[str]:
        key = (parts, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key in self._hashes:
            os.close(fd)
            self._hashes.move_to_end(key)
            return defer.succeed(self._hashes[key])
        waiter: defer.Deferred[str] = defer.Deferred()
        if key in self._hashing:
            os.close(fd)
            self._hashing[key].append(waiter)
            return waiter
        self._hashing[key] = [waiter]

        def finished(result: tuple[str, os.stat_result] | Any) -> None:
            os.close(fd)
            waiters = self._hashing.pop(key)
            if isinstance(result, tuple):
                digest, after = result
                if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == key[3:]:
                    self._remember(key, digest)
                for w in waiters:
                    w.callback(digest)
            else:
                for w in waiters:
                    w.errback(result)

        self._defer_to_thread(_sha256_of, fd).addBoth(finished)
        return waiter

    def _remember(self, key: tuple[object, ...], digest: str) -> None:
        self._hashes[key] = digest
        while len(self._hashes) > HASH_CACHE_SIZE:
            self._hashes.popitem(last=False)


def _inline(f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(f, *args)
