"""LIST, streamed: ``OK list``, the rows a batch at a time, then ``END <n>`` (docs/protocol.md).

The directory is read a batch at a time in the thread pool, and the next batch is read only
once the transport has taken the previous one, so a listing never holds more than one batch per
connection and never makes the reactor wait for the file system.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.python.failure import Failure

from tcpfiles.core.sending import write_paced
from tcpfiles.files import wire
from tcpfiles.files.refusals import refusal_of
from tcpfiles.files.states import RESPONDING, Stalling, while_current
from tcpfiles.tree.listing import DirListing, Entry, ListBatch

if TYPE_CHECKING:
    from tcpfiles.files.protocol import FileServerProtocol

log = Logger(namespace="tcpfiles.files")


def list_directory(conn: FileServerProtocol, request: wire.List) -> None:
    """Open the directory (a refusal raises), then stream it."""
    listing = Listing(conn, conn.account.store.open_listing(request.path))
    conn.enter(listing)
    listing.start_timer()
    listing.send(wire.LIST_START)


def _row(entry: Entry) -> bytes:
    """An entry as its LIST row (run in the thread pool, with the batch's reading)."""
    return wire.list_row(entry.kind, entry.size, entry.mtime, entry.name)


class Listing(Stalling):
    """A directory being listed: the rows sent so far, and the directory still open."""

    __slots__ = ("directory", "listed", "sent", "_reading", "_again")

    name = RESPONDING

    def __init__(self, conn: FileServerProtocol, directory: DirListing) -> None:
        super().__init__(conn)
        self.directory: DirListing | None = directory  # None once closed
        self.listed = 0  # rows sent so far
        self.sent = 0  # bytes written so far
        self._reading = False  # in the loop of more()
        self._again = False  # another batch is wanted

    def send(self, data: bytes) -> None:
        """Write part of a listing; the next batch is read once the transport can take more."""
        self.sent += len(data)
        write_paced(self.conn.transport, data).addCallbacks(self.more, self._cut_off)

    def more(self, _ignored: object = None) -> None:
        """Read the next batch.  A loop, not a recursion, when batches come back at once (a
        thread pool run inline, a socket that takes everything)."""
        if self._reading:
            self._again = True
            return
        self._reading = True
        limits = self.conn.limits
        try:
            self._again = True
            while self._again and self.directory is not None and self.current:
                self._again = False
                self.progress()
                # At the cap, want one more all the same: is there more than the cap?
                want = max(1, min(limits.list_batch, limits.max_list - self.listed))
                d = self.conn.factory.list_reads.run(self.directory.read, want, _row)
                d.addCallbacks(self.batch, self.failed)
        finally:
            self._reading = False

    @while_current
    def batch(self, batch: ListBatch) -> None:
        """Send a batch.  At the cap, one more entry is asked for: if there is one, the listing
        ends ``truncated`` (the reader's look-ahead usually has it already)."""
        if self.directory is None:
            return
        room = self.conn.limits.max_list - self.listed
        rows = batch.rows[:room]
        self.listed += len(rows)
        if len(batch.rows) > room:
            self._finish(b"".join(rows), wire.LIST_TRUNCATED)
        elif batch.end:
            self._finish(b"".join(rows), None)
        elif rows:
            self.send(b"".join(rows))
        else:  # only unlisted entries (temporaries, FIFOs) in this batch: read on
            self.more()

    @while_current
    def failed(self, failure: Failure) -> None:
        """The directory could not be read on: end the listing, saying so."""
        if self.directory is None:
            return
        conn = self.conn
        error = refusal_of(failure.value)
        if error is not None:
            log.warn(  # short of descriptors or memory: retryable, no traceback
                "{peer} {request}: listing stopped: {error}",
                peer=conn.peer,
                request=conn.request_text,
                error=wire.escape_text(str(error)),
            )
        else:
            log.failure(
                "{peer} {request}: listing failed",
                failure,
                peer=conn.peer,
                request=conn.request_text,
            )
        self._finish(b"", wire.LIST_FAILED)

    def _finish(self, rows: bytes, reason: str | None) -> None:
        self._close_directory()
        outcome = "OK" if reason is None else f"OK {reason} at {self.listed} entries"
        end = wire.list_end(self.listed, reason)
        self.conn.answer(outcome, self.sent + len(rows), rows, end)

    def _cut_off(self, _failure: Failure) -> None:
        """A part could not be written: the connection is gone."""
        self._close_directory()
        self.conn.log_outcome("aborted: connection lost", self.sent)

    def lost(self) -> None:
        """Cut off while a batch was being read: one log event for the request, this too."""
        self.leave()
        if self.directory is not None:
            self.conn.log_outcome("aborted: connection lost", self.sent)
        self._close_directory()

    def _close_directory(self) -> None:
        directory, self.directory = self.directory, None
        if directory is not None:
            directory.close()
