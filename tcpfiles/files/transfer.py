"""Transfers that survive the real world: resumable downloads, retried uploads, whole trees.

* :func:`fetch` downloads into ``NAME.<sha256 prefix>.part``: the part file names the version of
  the remote file it holds, so an interrupted download (this run or an earlier one) resumes from
  its length with ``RESUME``, while a remote file that changed starts over instead of splicing two
  versions.  The result is checked against STAT's size and sha256 before it is renamed.
* :func:`push` uploads one file (its sha256 computed off the reactor thread if not given); the
  server publishes it only when whole and verified.
* :class:`Session` keeps a connection and re-runs an operation after the connection is lost,
  reconnecting with capped exponential backoff and jitter for up to ``retry_for`` seconds.
* :func:`mirror` (``get -r``) and :func:`upload_tree` (``put -r``) walk directory trees.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from tcpfiles.files.client import (
    ConnectionClosed,
    EntryKind,
    FilesClient,
    IntegrityError,
    RemoteError,
)
from tcpfiles.files.client_source import Source, digest_of
from tcpfiles.files.session import Session
from tcpfiles.files.trees import TreeResult, local_name, make_parents, mirror, upload_tree
from tcpfiles.files.wire import ProtocolError

__all__ = [
    "HASH_CHUNK",
    "Fetched",
    "Progress",
    "Session",
    "Source",
    "Start",
    "TreeResult",
    "digest_of",
    "fetch",
    "local_name",
    "make_parents",
    "mirror",
    "part_path",
    "push",
    "sha256_of",
    "upload_tree",
]

#: A progress callback: ``f(n)`` with ``n`` the bytes just received or sent (a delta).
Progress = Callable[[int], None] | None
#: Called once a transfer knows its size: ``f(total, already)``, ``already`` the bytes a part
#: file holds from an earlier attempt (0 for an upload).
Start = Callable[[int, int], None] | None

HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Fetched:
    """A file that arrived whole and checked."""

    path: str
    size: int
    sha256: str
    resumed_from: int = 0


def part_path(destination: str, sha256: str) -> str:
    """Where a download of this version of a file is kept until it is complete."""
    return f"{destination}.{sha256[:12]}.part"


def _other_parts(destination: str, keep: str) -> Iterator[str]:
    directory = os.path.dirname(destination) or "."
    prefix = os.path.basename(destination) + "."
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            if (
                name.startswith(prefix)
                and name.endswith(".part")
                and len(name) == len(prefix) + 12 + len(".part")
            ):
                path = os.path.join(directory, name)
                if path != keep:
                    yield path


def _resume_point(part: str, size: int, digest: Any) -> int:
    """How much of the file the part already holds (hashing it); 0 to start over."""
    try:
        have = os.path.getsize(part)
    except FileNotFoundError:
        return 0
    if have > size:
        os.truncate(part, 0)
        return 0
    with open(part, "rb") as existing:
        while chunk := existing.read(HASH_CHUNK):
            digest.update(chunk)
    return have


def fetch(
    client: FilesClient,
    remote: str,
    destination: str,
    on_start: Start = None,
    on_progress: Progress = None,
    *,
    on_received: Progress = None,
) -> defer.Deferred[Fetched]:
    """Download ``remote`` to ``destination``, resuming a part file of the same version.

    ``on_start(total, already)`` is called once the size is known: ``total`` the file's size,
    ``already`` the bytes a part file of an earlier attempt holds (not fetched again).
    ``on_received(n)`` is called as each piece arrives with ``n`` the bytes of that piece (a
    delta: ``already`` plus their sum is the running total); ``on_progress`` is its older name.

    A lost connection (:class:`ConnectionClosed`) leaves the part file for the next attempt; a
    refusal (:class:`RemoteError`, also ``not-a-file`` for a directory) or a failed check
    (:class:`IntegrityError`) removes it.  Fires with :class:`Fetched`.
    """
    if on_progress is not None and on_received is not None:
        raise TypeError("give on_received or on_progress (its older name), not both")
    coroutine = _fetch(client, remote, destination, on_start, on_received or on_progress)
    return defer.Deferred.fromCoroutine(coroutine)


async def _fetch(
    client: FilesClient, remote: str, destination: str, on_start: Start, on_received: Progress
) -> Fetched:
    info = await client.stat(remote)
    if info.kind is not EntryKind.FILE:
        raise RemoteError("not-a-file", f"is a directory: {remote}")
    if info.size is None or info.sha256 is None:
        raise client.protocol.violated(ProtocolError("STAT of a file without its size or sha256"))
    part = part_path(destination, info.sha256)
    for stale in _other_parts(destination, keep=part):  # parts of older versions
        os.unlink(stale)
    digest = hashlib.sha256()
    offset = _resume_point(part, info.size, digest)
    if on_start is not None:
        on_start(info.size, offset)
    out = open(part, "ab")  # noqa: SIM115 - closed on every path below

    def sink(data: bytes) -> None:
        out.write(data)
        digest.update(data)
        if on_received is not None:
            on_received(len(data))

    try:
        got = await client.get(remote, sink, offset=offset)
        out.close()
        if offset + got != info.size or digest.hexdigest() != info.sha256:
            raise IntegrityError(f"{remote} changed on the server during the download; try again")
        os.replace(part, destination)
    except ConnectionClosed:
        out.close()  # keep what arrived: the next attempt resumes from it
        raise
    except BaseException:
        out.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        raise
    return Fetched(destination, info.size, info.sha256, offset)


def sha256_of(path: str) -> tuple[int, str]:
    """Size and sha256 of a local file, read here and now (it blocks: in a Twisted program,
    :func:`digest_of` reads in the reactor's thread pool)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as source:
        while chunk := source.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def push(
    client: FilesClient,
    local: Source,
    remote: str,
    size: int | None = None,
    sha256: str | None = None,
    replace: bool = False,
    on_start: Start = None,
    on_progress: Progress = None,
    retried: bool = False,
    *,
    on_sent: Progress = None,
) -> defer.Deferred[str]:
    """Upload ``local`` (a path, a binary file object or a descriptor, as
    :meth:`FilesClient.put` takes) to ``remote``; fires with the sha256.

    ``size`` and ``sha256`` are computed (off the reactor thread) when not given; a caller that
    retries computes them once with :func:`digest_of` and passes them to every attempt.
    ``on_start(total, 0)`` is called before the body; ``on_sent(n)`` after each piece of it is
    written, with ``n`` the bytes of that piece (a delta); ``on_progress`` is its older name.
    On a retry (``retried``), ``exists`` for a file with our sha256 means the previous attempt
    did land, and counts as done.
    """
    if on_progress is not None and on_sent is not None:
        raise TypeError("give on_sent or on_progress (its older name), not both")
    coroutine = _push(
        client, local, remote, size, sha256, replace, on_start, on_sent or on_progress, retried
    )
    return defer.Deferred.fromCoroutine(coroutine)


async def _push(
    client: FilesClient,
    local: Source,
    remote: str,
    size: int | None,
    sha256: str | None,
    replace: bool,
    on_start: Start,
    on_sent: Progress,
    retried: bool,
) -> str:
    if size is None or sha256 is None:
        size, sha256 = await digest_of(local, client.protocol.clock)
    if on_start is not None:
        on_start(size, 0)
    try:
        return await client.put(remote, local, size, sha256, replace, on_sent=on_sent)
    except RemoteError as exc:
        if exc.code == "exists" and retried:
            info = await client.stat(remote)
            if info.sha256 == sha256:
                return sha256
        raise
