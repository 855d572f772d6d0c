"""Transfers that survive the real world: resumable downloads, retried uploads, whole trees.

* :func:`fetch` downloads into ``NAME.<sha256 prefix>.part``: the part file names the version of
  the remote file it holds, so an interrupted download (this run or an earlier one) resumes from
  its length with ``RESUME``, while a remote file that changed starts over instead of splicing two
  versions.  The result is checked against STAT's size and sha256 before it is renamed.
* :func:`push` uploads one file; the server publishes it only when whole and verified.
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
    FilesClient,
    IntegrityError,
    RemoteError,
)
from tcpfiles.files.session import Session
from tcpfiles.files.trees import TreeResult, local_name, make_parents, mirror, upload_tree

__all__ = [
    "HASH_CHUNK",
    "Fetched",
    "Progress",
    "Session",
    "Start",
    "TreeResult",
    "fetch",
    "local_name",
    "make_parents",
    "mirror",
    "part_path",
    "push",
    "sha256_of",
    "upload_tree",
]

Progress = Callable[[int], None] | None
Start = Callable[[int, int], None] | None  # (total size, bytes already there)

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


@defer.inlineCallbacks
def fetch(
    client: FilesClient,
    remote: str,
    destination: str,
    on_start: Start = None,
    on_progress: Progress = None,
) -> Any:
    """Download ``remote`` to ``destination``, resuming a part file of the same version.

    A lost connection leaves the part file for the next attempt; a refusal or a failed check
    removes it.  Fires with :class:`Fetched`.
    """
    info = yield client.stat(remote)
    if info.kind != "file":
        raise RemoteError("not-a-file", f"is a directory: {remote}")
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
        if on_progress is not None:
            on_progress(len(data))

    try:
        got = yield client.get(remote, sink, offset=offset)
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
    """Size and sha256 of a local file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as source:
        while chunk := source.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


@defer.inlineCallbacks
def push(
    client: FilesClient,
    local: str,
    remote: str,
    size: int,
    sha256: str,
    replace: bool = False,
    on_start: Start = None,
    on_progress: Progress = None,
    retried: bool = False,
) -> Any:
    """Upload ``local`` (of known size and sha256) to ``remote``; fires with the sha256.

    On a retry, ``exists`` for a file with our sha256 means the previous attempt did land.
    """
    fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if on_start is not None:
            on_start(size, 0)
        try:
            return (yield client.put(remote, fd, size, sha256, replace, on_progress))
        except RemoteError as exc:
            if exc.code == "exists" and retried:
                info = yield client.stat(remote)
                if info.sha256 == sha256:
                    return sha256
            raise
    finally:
        os.close(fd)
