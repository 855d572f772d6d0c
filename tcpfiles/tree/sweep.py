"""The sweep at start: upload temporaries that a server which died left behind are removed.

It removes only the temporaries it can lock itself (:func:`tcpfiles.tree.templock.remove_unlocked`):
another process's upload in flight (``--workers``, or two servers on one root) holds its
temporary locked and keeps it, and the lock of a process that died is gone with it.
"""

from __future__ import annotations

import os

from twisted.application import service
from twisted.logger import Logger

from tcpfiles.tree.paths import Root
from tcpfiles.tree.templock import remove_unlocked
from tcpfiles.tree.uploads import TEMP_SUFFIX, is_temporary

__all__ = ["StaleTemporaries", "remove_stale_temporaries"]

log = Logger(namespace="tcpfiles.files")  # what the removal line has always been logged as


def remove_stale_temporaries(root: Root) -> list[str]:
    """Delete upload temporaries left by a server that died; the paths removed.  One that an
    upload in flight holds locked (in this process or another) is left alone."""
    removed = []
    for directory, _dirs, files in os.walk(root.real):  # does not follow symlinks
        for name in files:
            if is_temporary(name) and name.endswith(TEMP_SUFFIX):
                path = os.path.join(directory, name)
                if remove_unlocked(path):
                    removed.append(path)
    return removed


class StaleTemporaries(service.Service):
    """At start, remove upload temporaries that a server which died left behind."""

    def __init__(self, root: Root) -> None:
        self.root = root

    def startService(self) -> None:
        """Walk the root once."""
        super().startService()
        for path in remove_stale_temporaries(self.root):
            log.info("removed a stale upload temporary: {path}", path=path)
