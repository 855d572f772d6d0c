"""The file store: what the files protocol can ask of a served directory.

Everything goes through :func:`tcpfiles.files.paths.open_beneath`.  Hashing is a
:class:`~tcpfiles.files.hashing.Hasher`'s: off the reactor thread in bounded jobs, cached and
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

from tcpfiles.files.hashing import Hasher, inline
from tcpfiles.files.paths import (
    Exhausted,
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
        a store has its own, running jobs with ``defer_to_thread`` (default: inline)."""
        self.root = root
        self.hasher = hasher or Hasher(defer_to_thread or inline)

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


def _scandir(fd: int) -> Any:
    """``os.scandir`` of a directory descriptor (it duplicates it: EMFILE is ``busy``)."""
    try:
        return os.scandir(fd)
    except OSError as exc:
        raise os_error(exc) from None
