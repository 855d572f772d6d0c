"""The zope.interface contracts of the file tree."""

from zope.interface import Attribute, Interface

from tcpfiles.core.interfaces import IAccount

__all__ = ["IFileStore", "IFilesAccount"]


class IFileStore(Interface):
    """What the files protocol needs from a served tree; every path is a wire path (str)."""

    def open_file(path):  # type: ignore[no-untyped-def]
        """Open a regular file for reading: an ``OpenedFile``; raises ``PathError``."""

    def open_listing(path):  # type: ignore[no-untyped-def]
        """A directory opened for listing: a ``DirListing`` whose ``read(limit)`` fires with a
        ``ListBatch`` of entries (directory order) read off the reactor; raises ``PathError``."""

    def stat(path, owner=None):  # type: ignore[no-untyped-def]
        """A Deferred firing with a ``FileInfo`` (with sha256 for a file), or a ``PathError``.

        ``owner`` (hashable: the client's address) is who asks, for per-client bounds.
        Cancelling the Deferred means nobody waits for the answer any more.
        """


class IFilesAccount(IAccount):
    """What one account may do with files: its own store (root) and, if it may write, uploads."""

    store = Attribute("an IFileStore confined to the account's root")
    uploads = Attribute("a tcpfiles.tree.uploads.Uploads, or None for read-only access")
