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

from tcpfiles.files.paths import (
    Exhausted,
    FileChanging,
    NotFound,
    PathError,
    Root,
    open_beneath,
    open_file_beneath,
    os_error,
    parse_path,
)
from tcpfiles.interfaces import IFileStore

#: Names starting with this are upload temporaries: never listed, never served.
TEMP_PREFIX = ".tcpfiles-"

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
class Entry:
    """One line of a directory listing."""

    kind: str  # "f" for a regular file, "d" for a directory
    size: int | None  # None for a directory
    mtime: float
    name: bytes


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

    def list_dir(self, path: str) -> list[Entry]:
        """Entries of a directory, sorted by name; hides temporaries, specials and escapes."""
        parts = parse_path(path)
        _check_parts(parts)
        fd = open_beneath(self.root, parts, want="dir")
        entries = []
        try:
            with _scandir(fd) as scan:
                for item in scan:
                    if item.name.startswith(TEMP_PREFIX):
                        continue
                    entry = self._entry(parts, item)
                    if entry is not None:
                        entries.append(entry)
        finally:
            os.close(fd)
        entries.sort(key=lambda e: e.name)
        return entries

    def _entry(self, parts: tuple[str, ...], item: os.DirEntry[str]) -> Entry | None:
        try:
            st = item.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                st = self._stat_beneath((*parts, item.name))
        except Exhausted:
            raise  # out of descriptors: the listing would silently miss linked entries
        except (OSError, PathError):
            return None  # vanished meanwhile, or a link that leaves the root: not listed
        name = os.fsencode(item.name)
        if stat.S_ISDIR(st.st_mode):
            return Entry("d", None, st.st_mtime, name)
        if stat.S_ISREG(st.st_mode):
            return Entry("f", st.st_size, st.st_mtime, name)
        return None

    def _stat_beneath(self, parts: tuple[str, ...]) -> os.stat_result:
        """Stat the target of a symlink, only if it resolves inside the root."""
        fd = open_beneath(self.root, parts, want="any")
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

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


def _scandir(fd: int) -> Any:
    """``os.scandir`` of a directory descriptor (it duplicates it: EMFILE is ``busy``)."""
    try:
        return os.scandir(fd)
    except OSError as exc:
        raise os_error(exc) from None


def _inline(f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(f, *args)
