"""The process's file descriptor limit, checked against the connections it may accept.

Every connection holds a socket, and while it is served it may hold one more descriptor (the
file a GET sends, an upload's temporary, a directory being listed).  A server whose
``--max-connections`` (summed over the behaviours it serves) can exceed its descriptor limit runs
out of descriptors before it refuses connections: requests are then answered ``ERR busy`` and
Twisted closes new connections unanswered.  At start, as servers do, the soft limit is raised to
the hard one; if it is still too small, one warning says what to do.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application import service
from twisted.logger import Logger

__all__ = [
    "KEPT_OPEN",
    "PER_CONNECTION",
    "SPARE",
    "FdLimitCheck",
    "Limits",
    "needed",
    "raise_soft_limit",
    "shortfall_warning",
]

log = Logger(namespace="tcpfiles.core.fdlimit")

#: Descriptors one connection may hold at once: its socket and, at most, two more: an upload's
#: parent directory and temporary file, or a listing's directory and scandir's duplicate of it.
PER_CONNECTION = 3
#: Descriptors the process needs besides its connections: listening sockets, the root's own
#: descriptor, stdio, Twisted's reserved EMFILE-recovery descriptor, the log, the waker pipe.
SPARE = 32
#: Descriptors the file tree keeps open between requests: small files served often
#: (:mod:`tcpfiles.tree.filecache`), at most this many in the whole process.
KEPT_OPEN = 64

Limits = tuple[int, int]


def needed(max_connections: int) -> int:
    """Descriptors a server allowing ``max_connections`` connections in total may need."""
    return max_connections * PER_CONNECTION + SPARE + KEPT_OPEN


def raise_soft_limit(
    get: Callable[[int], Limits] = resource.getrlimit,
    set_: Callable[[int, Limits], None] = resource.setrlimit,
) -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard one; (soft before, soft now)."""
    soft, hard = get(resource.RLIMIT_NOFILE)
    if hard == soft:
        return soft, soft
    for target in _targets(hard):
        try:
            set_(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue  # an unlimited hard limit may still be capped (fs.nr_open): try lower
        return soft, target
    return soft, soft


def _targets(hard: int) -> list[int]:
    """Soft limits to try, highest first (an unlimited hard limit is capped by fs.nr_open)."""
    if hard != resource.RLIM_INFINITY:
        return [hard]
    found = {1 << 20, 1 << 16}
    try:
        with open("/proc/sys/fs/nr_open") as f:
            found.add(int(f.read()))
    except (OSError, ValueError):
        pass
    return sorted(found, reverse=True)


def shortfall_warning(soft: int, total_connections: int) -> str | None:
    """The warning to log when ``soft`` descriptors are too few, else None."""
    want = needed(total_connections)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return None
    fits = max(1, (soft - SPARE - KEPT_OPEN) // PER_CONNECTION)
    return (
        f"the file descriptor limit ({soft}) is below the {want} that {total_connections} "
        f"connections (--max-connections summed over the behaviours served) may need "
        f"({PER_CONNECTION} per connection + {SPARE + KEPT_OPEN}): past it, requests are answered "
        f"'ERR busy' and new connections are closed unanswered. Raise the limit "
        f"(ulimit -n {want}, or LimitNOFILE={want} in a systemd unit) or lower "
        f"--max-connections (to {fits} or fewer in total)"
    )


class FdLimitCheck(service.Service):
    """At start: raise the soft descriptor limit, warn once if it is still too small, and open
    the root's descriptor while descriptors are plentiful."""

    def __init__(
        self,
        trackers: Sequence[Any],
        root: Any = None,
        get: Callable[[int], Limits] = resource.getrlimit,
        set_: Callable[[int, Limits], None] = resource.setrlimit,
    ) -> None:
        #: Connection trackers of every stream behaviour (read at start: the list may still grow).
        self.trackers = trackers
        self.root = root
        self._get = get
        self._set = set_
        self._checked = False  # twistd's own call finds it done when bind_now ran it first

    def total_connections(self) -> int:
        """``--max-connections`` summed over the behaviours served."""
        return sum(tracker.max_total for tracker in self.trackers)

    def privilegedStartService(self) -> None:
        """Raise, check, warn: before the listeners (started after this service) bind."""
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        if self._checked:
            return
        self._checked = True
        before, soft = raise_soft_limit(self._get, self._set)
        if soft != before:
            log.info(
                "raised the file descriptor limit from {before} to {soft}", before=before, soft=soft
            )
        warning = shortfall_warning(soft, self.total_connections())
        if warning is not None:
            log.warn("{text}", text=warning)  # not "warning": a legacy key for warnings.warn events
        if self.root is not None:
            self.root.fd()  # kept for the process's life: never fails later for want of a slot
