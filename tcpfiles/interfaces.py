"""The zope.interface contracts of tcpfiles."""

from zope.interface import Interface


class IFileStore(Interface):
    """What the files protocol needs from a served tree; every path is a wire path (str)."""

    def open_file(path):  # type: ignore[no-untyped-def]
        """Open a regular file for reading: an ``OpenedFile``; raises ``PathError``."""

    def list_dir(path):  # type: ignore[no-untyped-def]
        """A directory's entries as a sorted list of ``Entry``; raises ``PathError``."""

    def stat(path):  # type: ignore[no-untyped-def]
        """A Deferred firing with a ``FileInfo`` (with sha256 for a file), or a ``PathError``."""
