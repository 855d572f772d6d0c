"""Uploads: a body streamed to a hidden temporary, checked, flushed, and only then published.

The sequence is HARDENING.md's: validate first (path, size limit, free space, one upload per name)
→ create ``.tcpfiles-<random>.part`` in the target directory with ``O_EXCL`` → write the body as it
arrives, counting and hashing → check size and sha256 → ``fsync`` (off the reactor thread) →
publish with ``link`` (a new file: never replaces one that appeared meanwhile) or ``rename``
(``REPLACE``) → ``fsync`` the directory.  On any failure, or when :meth:`Upload.abort` is called
(disconnect, timeout, shutdown), the temporary is removed and the final name is never touched.

A temporary is locked (``flock``) by its upload from its creation until it is published or
removed, so that the sweep at start (:mod:`tcpfiles.tree.sweep`) spares another process's
upload in flight.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from tcpfiles.tree.paths import (
    BadPath,
    Forbidden,
    NotADirectory,
    NotAFile,
    NotFound,
    PathError,
    Root,
    exhausted,
    open_beneath,
    parse_path,
    stat_beneath,
)
from tcpfiles.tree.quota import Quota
from tcpfiles.tree.store import TEMP_PREFIX
from tcpfiles.tree.templock import create_locked

__all__ = [
    "TEMP_SUFFIX",
    "Busy",
    "Exists",
    "Mismatch",
    "SpaceLedger",
    "TooLarge",
    "Upload",
    "Uploads",
    "is_temporary",
    "make_directory",
]

TEMP_SUFFIX = ".part"


class Exists(PathError):
    """The target exists and the client did not ask to replace it."""

    code = "exists"


class TooLarge(PathError):
    """Over the upload limit, or more than the free space."""

    code = "too-large"


class Busy(PathError):
    """Another upload to the same name is in progress."""

    code = "busy"


class Mismatch(PathError):
    """What arrived does not have the size or sha256 the client announced."""

    code = "mismatch"


class SpaceLedger:
    """The bytes that uploads in flight have declared and not yet written, per file system.

    A free-space check that looked only at the disk would accept 150 uploads of 1 GiB each on a
    disk with 72 GiB free (measured): each upload holds its declared size against the free space
    until it is published or aborted.  Share one ledger between every :class:`Uploads` whose roots
    may lie on the same file system (the realm does).
    """

    def __init__(self) -> None:
        self._uploads: set[Upload] = set()

    def promised(self, device: int) -> int:
        """Bytes still to come for the uploads in flight on ``device``."""
        return sum(u.remaining for u in self._uploads if u.device == device)

    def hold(self, upload: Upload) -> None:
        """Count ``upload`` until it is released."""
        self._uploads.add(upload)

    def release(self, upload: Upload) -> None:
        """Stop counting ``upload`` (published or aborted)."""
        self._uploads.discard(upload)


def is_temporary(name: str) -> bool:
    """Whether a directory entry is one of our upload temporaries."""
    return name.startswith(TEMP_PREFIX)


class Uploads:
    """Every upload in progress below one root, and the rules they share."""

    def __init__(
        self,
        root: Root,
        max_upload: int,
        defer_to_thread: Callable[..., defer.Deferred[Any]],
        reserve: int = 0,
        ledger: SpaceLedger | None = None,
    ) -> None:
        self.root = root
        self.max_upload = max_upload
        self.reserve = reserve  # free space never given away
        self.ledger = ledger if ledger is not None else SpaceLedger()
        self._defer_to_thread = defer_to_thread
        self._in_progress: set[tuple[int, int, str]] = set()

    def begin(
        self, path: str, size: int, sha256: str, replace: bool, quota: Quota | None = None
    ) -> Upload:
        """Validate an upload (against ``quota`` too: held until it is over) and open its
        temporary; raises a ``PathError`` subclass."""
        if size > self.max_upload:
            raise TooLarge(
                f"{size} bytes is over this server's upload limit of {self.max_upload} bytes"
            )
        parts = parse_path(path)
        if not parts:
            raise BadPath("an upload needs a file name")
        if any(is_temporary(part) for part in parts):
            raise BadPath(f"names starting with {TEMP_PREFIX} are reserved")
        parent = _open_parent(self.root, parts)
        try:
            name = parts[-1]
            existing = _lstat(parent, name)
            replaced = 0  # what publishing removes: a link itself, never what it points to
            if existing is not None:
                if stat.S_ISLNK(existing.st_mode):
                    existing = _through_link(self.root, parts)
                else:
                    replaced = existing.st_size
                if not stat.S_ISREG(existing.st_mode):
                    raise NotAFile("a directory or special file is in the way")
                if not replace:
                    raise Exists("the file exists; REPLACE to overwrite it")
            directory = os.fstat(parent)
            vfs = os.fstatvfs(parent)
            promised = self.ledger.promised(directory.st_dev)
            if size > vfs.f_bavail * vfs.f_frsize - self.reserve - promised:
                raise TooLarge("not enough free space on the server")
            key = (directory.st_dev, directory.st_ino, name)
            if key in self._in_progress:
                raise Busy("another upload of this file is in progress")
            held = 0 if quota is None else quota.reserve(size, replaced)
            try:
                upload = Upload(self, parent, name, size, sha256, replace, key, parts)
            except BaseException:
                if quota is not None:
                    quota.release(held)
                raise
            upload.quota, upload.held = quota, held
        except BaseException:
            os.close(parent)
            raise
        self._in_progress.add(key)
        self.ledger.hold(upload)
        return upload

    @property
    def in_flight(self) -> int:
        """Uploads begun and not yet stored or given up."""
        return len(self._in_progress)

    def _done(self, upload: Upload) -> None:
        self._in_progress.discard(upload.key)
        self.ledger.release(upload)

    def run_in_thread(self, f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """Blocking disk work (fsync) off the reactor thread."""
        return self._defer_to_thread(f, *args)


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open_parent(root: Root, parts: tuple[str, ...]) -> int:
    """The directory a write goes into.  A file where a directory is needed is ``not-found``,
    as reads say of ``file.txt/x`` (never ``not-a-directory``, which a read would not say)."""
    try:
        return open_beneath(root, parts[:-1], want="dir")
    except NotADirectory:
        raise NotFound("no such file or directory") from None


def _write_refused(exc: OSError) -> Exception:
    """Why an upload could not be written, as the answer a client gets: out of descriptors is
    busy; not allowed is forbidden (as MKDIR says); a full disk is too-large; else internal."""
    if (busy := exhausted(exc)) is not None:
        return busy
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Forbidden("the server may not write there")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return TooLarge("the server's disk is full")
    return exc


def _through_link(root: Root, parts: tuple[str, ...]) -> os.stat_result:
    """What a symlink in the way leads to, resolved exactly as reads resolve it.

    Writes answer like reads: a symlink that leaves the root, dangles or loops is
    :class:`NotFound` (never "exists" or "in the way", which would tell that something is there).
    """
    try:
        return stat_beneath(root, parts)
    except NotAFile:  # a FIFO, device or socket inside the root: reads say not-a-file too
        raise NotAFile("a directory or special file is in the way") from None


class Upload:
    """One upload in progress: owns the parent directory's descriptor and the temporary."""

    def __init__(
        self,
        uploads: Uploads,
        parent: int,
        name: str,
        size: int,
        sha256: str,
        replace: bool,
        key: tuple[int, int, str],
        parts: tuple[str, ...] = (),
    ) -> None:
        self.uploads = uploads
        self.parts = parts or (name,)  # the wire path, to answer like reads do
        self.parent = parent
        self.name = name
        self.size = size
        self.expected = sha256
        self.replace = replace
        self.key = key
        self.received = 0
        self.device = key[0]
        self.digest = hashlib.sha256()
        self.quota: Quota | None = None  # the account's, holding ``held`` bytes of it
        self.held = 0
        try:
            self.temp, fd = create_locked(parent, TEMP_PREFIX, TEMP_SUFFIX)
        except OSError as exc:
            raise _write_refused(exc) from None
        self.fd: int | None = fd
        self.finished = False

    @property
    def remaining(self) -> int:
        """Body bytes still expected."""
        return self.size - self.received

    def write(self, data: bytes) -> None:
        """Append body bytes; an OSError (disk full) is the caller's to report."""
        assert self.fd is not None and len(data) <= self.remaining
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except OSError as exc:
                raise _write_refused(exc) from None
            view = view[written:]
        self.digest.update(data)
        self.received += len(data)

    @defer.inlineCallbacks
    def finish(self) -> Any:
        """Check, flush and publish; fires with the sha256, or fails (temporary removed)."""
        try:
            if self.received != self.size or self.digest.hexdigest() != self.expected:
                raise Mismatch(f"the data does not match the announced sha256 {self.expected}")
            fd = self.fd
            yield self.uploads.run_in_thread(os.fsync, fd)
            # The descriptor, and with it the lock, stays open until the temporary is gone.
            replaced = self._replaced()
            if self.replace:
                os.rename(self.temp, self.name, src_dir_fd=self.parent, dst_dir_fd=self.parent)
            else:
                try:
                    os.link(
                        self.temp,
                        self.name,
                        src_dir_fd=self.parent,
                        dst_dir_fd=self.parent,
                        follow_symlinks=False,
                    )
                except FileExistsError:
                    _through_link(self.uploads.root, self.parts)  # NotFound: an escaping link
                    raise Exists("the file appeared meanwhile; REPLACE to overwrite it") from None
                os.unlink(self.temp, dir_fd=self.parent)
            self._close_fd()
            yield self.uploads.run_in_thread(os.fsync, self.parent)
        except BaseException:
            self.abort()
            raise
        if self.quota is not None:
            self.quota.stored(self.size - replaced)
        self._release()
        return self.expected

    def abort(self) -> None:
        """Give up: remove the temporary (never the final name)."""
        if self.finished:
            return
        if self.fd is not None:  # not published yet: the temporary is still ours
            try:
                os.unlink(self.temp, dir_fd=self.parent)
            except FileNotFoundError:
                pass
        self._close_fd()
        self._release()

    def _replaced(self) -> int:
        """Bytes of the regular file about to be replaced (0: none, or no quota to count it)."""
        found = _lstat(self.parent, self.name) if self.quota and self.replace else None
        return found.st_size if found is not None and stat.S_ISREG(found.st_mode) else 0

    def _close_fd(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _release(self) -> None:
        self.finished = True
        if self.quota is not None:
            self.quota.release(self.held)
        os.close(self.parent)
        self.uploads._done(self)


def make_directory(root: Root, path: str) -> bool:
    """``MKDIR``: create one directory below an existing one; False if it already exists."""
    parts = parse_path(path)
    if not parts:
        return False  # the root exists
    if any(is_temporary(part) for part in parts):
        raise BadPath(f"names starting with {TEMP_PREFIX} are reserved")
    parent = _open_parent(root, parts)
    try:
        os.mkdir(parts[-1], 0o755, dir_fd=parent)
        return True
    except FileExistsError:
        existing = _lstat(parent, parts[-1])
        if existing is not None and stat.S_ISLNK(existing.st_mode):
            existing = _through_link(root, parts)  # NotFound when it leaves the root
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            return False
        raise Exists("a file of that name is in the way") from None
    except PermissionError:
        raise Forbidden("the server may not create it") from None
    finally:
        os.close(parent)
