"""Reading a directory in bounded batches, off the reactor thread.

A listing is read a batch at a time: each :meth:`DirListing.read` runs in the store's thread pool
(``defer_to_thread``), scans at most a bounded number of directory entries and ``lstat``\\ s each
one relative to the directory's descriptor, so neither the reactor nor one call in the pool works
in proportion to the size of the directory, and nothing holds more than one batch of entries.
The order is the directory's own (``readdir``): a listing read in batches cannot be sorted.

The directory is opened with :func:`tcpfiles.tree.paths.open_beneath`, so a listing is confined
like every other path; a symlink entry shows its target only if that resolves inside the root.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from tcpfiles.tree.paths import (
    BadPath,
    Exhausted,
    PathError,
    Root,
    exhausted,
    open_beneath,
    os_error,
    parse_path,
    stat_beneath,
)

__all__ = [
    "SCAN_FACTOR",
    "TEMP_PREFIX",
    "UNREQUESTABLE",
    "DeferToThread",
    "DirListing",
    "Entry",
    "ListBatch",
    "ListingBusy",
    "open_listing",
    "requestable",
]

#: The type of an entry whose name no request can carry (see :func:`requestable`).
UNREQUESTABLE = "x"

#: Names starting with this are upload temporaries: never listed, never served.
TEMP_PREFIX = ".tcpfiles-"

#: Directory entries one :meth:`DirListing.read` may scan, per entry asked for: hidden entries
#: (temporaries, FIFOs, escaping links) are skipped, but never more than this many in one call.
SCAN_FACTOR = 4

DeferToThread = Callable[..., defer.Deferred[Any]]


@dataclass(frozen=True)
class Entry:
    """One line of a directory listing."""

    kind: str  # "f" a regular file, "d" a directory, "x" one whose name no request can carry
    size: int | None  # None for a directory
    mtime: float
    name: bytes


@dataclass(frozen=True)
class ListBatch:
    """What one :meth:`DirListing.read` found: some rows, and whether the directory ended."""

    #: The entries, each as the ``render`` given to :meth:`DirListing.read` made it.
    rows: list[Any]
    #: True when no entry follows these: the listing is complete.
    end: bool


def _same(entry: Entry) -> Entry:
    return entry


class ListingBusy(RuntimeError):
    """A second batch was asked for while one was being read (a caller's bug)."""


class DirListing:
    """An open directory, read in batches; the holder must :meth:`close` it.

    At most one :meth:`read` may be in flight.  The entry after a batch is read ahead (and kept
    for the next batch), so that a batch can say whether it is the last one.
    """

    def __init__(
        self, root: Root, parts: tuple[str, ...], fd: int, defer_to_thread: DeferToThread
    ) -> None:
        self.root = root
        self.parts = parts
        self._defer_to_thread = defer_to_thread
        # os.scandir reads through a duplicate of ``fd``, but its entries' stat() is an fstatat
        # relative to ``fd`` itself: both stay open until close().
        self._fd = fd
        try:
            self._scan: Any = os.scandir(fd)  # duplicates fd: EMFILE is possible (busy)
        except OSError as exc:
            os.close(fd)
            raise os_error(exc) from None
        self._ahead: list[Entry] = []
        self._exhausted = False
        self._reading = False
        self._closed = False

    def read(self, limit: int, render: Callable[[Entry], Any] = _same) -> defer.Deferred[ListBatch]:
        """The next batch of at most ``limit`` (>= 1) entries, read in the thread pool.

        Each entry is passed through ``render`` there too (the files server makes its wire row
        of it, so the reactor only writes bytes).  A batch may hold fewer entries (even none)
        without being the last one, when the directory holds many entries that are not listed:
        only ``end`` says it is finished.
        """
        if self._reading:
            raise ListingBusy("one batch at a time")
        if self._closed:
            return defer.succeed(ListBatch([], True))
        self._reading = True
        d = self._defer_to_thread(self._read, limit, render)
        d.addBoth(self._read_done)
        return d

    def close(self) -> None:
        """Release the directory now, or as soon as the batch being read is done."""
        if self._closed:
            return
        self._closed = True
        if not self._reading:
            self._release()

    def _read_done(self, result: Any) -> Any:
        self._reading = False
        if self._closed:
            self._release()
        return result

    def _release(self) -> None:
        self._scan.close()
        os.close(self._fd)

    def _read(self, limit: int, render: Callable[[Entry], Any]) -> ListBatch:
        """In a thread: scan up to ``SCAN_FACTOR * limit`` entries, keep ``limit`` + one ahead."""
        entries, self._ahead = self._ahead, []
        budget = SCAN_FACTOR * max(limit, 1)
        while len(entries) <= limit and budget > 0 and not self._exhausted:
            item = next(self._scan, None)
            if item is None:
                self._exhausted = True
                self._scan.close()
                break
            budget -= 1
            entry = self._entry(item)
            if entry is not None:
                entries.append(entry)
        batch, self._ahead = entries[:limit], entries[limit:]
        return ListBatch([render(e) for e in batch], self._exhausted and not self._ahead)

    def _entry(self, item: os.DirEntry[str]) -> Entry | None:
        """An entry for the listing, or None for what is not listed."""
        if item.name.startswith(TEMP_PREFIX):
            return None
        try:
            st = item.stat(follow_symlinks=False)  # fstatat relative to the directory's fd
            if stat.S_ISLNK(st.st_mode):
                st = stat_beneath(self.root, (*self.parts, item.name))
        except Exhausted:
            raise  # out of descriptors or memory: never "not there"
        except PathError:
            return None  # a link that leaves the root, dangles or loops: not listed
        except OSError as exc:
            if (busy := exhausted(exc)) is not None:
                raise busy from None
            return None  # vanished meanwhile: not listed
        name = os.fsencode(item.name)
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            return None
        if not requestable(item.name):  # shown, so nothing is hidden; but never as fetchable
            return Entry(UNREQUESTABLE, None, st.st_mtime, name)
        if stat.S_ISDIR(st.st_mode):
            return Entry("d", None, st.st_mtime, name)
        return Entry("f", st.st_size, st.st_mtime, name)


def requestable(name: str) -> bool:
    """Whether a request can name this directory entry.

    A name that is not UTF-8, or holds a control character or a backslash, cannot be sent in a
    request (see :func:`~tcpfiles.tree.paths.parse_path`): LIST shows such an entry with the
    type ``x``, never as a file or directory a client could fetch, and hides nothing.
    """
    try:
        os.fsencode(name).decode("utf-8")
        return parse_path(name) == (name,)
    except (UnicodeDecodeError, BadPath):
        return False


def open_listing(root: Root, parts: tuple[str, ...], defer_to_thread: DeferToThread) -> DirListing:
    """Open the directory ``parts`` below ``root`` for a batched listing; raises ``PathError``."""
    fd = open_beneath(root, parts, want="dir")
    return DirListing(root, parts, fd, defer_to_thread)
