"""Whole directory trees: ``get -r`` (:func:`mirror`) and ``put -r`` (:func:`upload_tree`), over a
:class:`~tcpfiles.files.session.Session` (re-exported by :mod:`tcpfiles.files.transfer`)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from tcpfiles.files import wire
from tcpfiles.files.client import (
    FilesClient,
    IncompleteListing,
    IntegrityError,
    RemoteError,
)
from tcpfiles.files.session import Session

__all__ = ["TreeResult", "local_name", "make_parents", "mirror", "upload_tree"]


def local_name(raw: bytes | str) -> str | None:
    """A remote name (a :attr:`RemoteEntry.name <tcpfiles.files.wire.RemoteEntry.name>`, or its
    bytes) as a safe local one, or None.

    None for ``.``, ``..``, a slash, NUL, bytes that are not UTF-8, and any character that
    ``ls`` would have to escape to show it safely (controls, bidi overrides, zero-width and
    line-separator characters, private use): such a name would mislead on a terminal.
    """
    if isinstance(raw, str):
        raw = wire.encode_name(raw)
    if raw in (b"", b".", b"..") or b"/" in raw or b"\0" in raw:
        return None
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return name if wire.escape_text(name) == name.replace("\\", "\\\\") else None


@dataclass
class TreeResult:
    """What a tree transfer did: files and bytes moved, what it skipped (names that cannot be a
    local file, special files and links) and what failed, with its error."""

    files: int = 0
    bytes: int = 0
    skipped: list[str] | None = None
    failed: list[tuple[str, BaseException]] | None = None

    def __post_init__(self) -> None:
        self.skipped = self.skipped or []
        self.failed = self.failed or []


def mirror(
    session: Session,
    remote_dir: str,
    local_dir: str,
    each: Callable[[str, str], defer.Deferred[Any]],
    result: TreeResult | None = None,
) -> defer.Deferred[TreeResult]:
    """``get -r``: recreate ``remote_dir`` under ``local_dir``; ``each(remote, local)`` fetches a
    file (a Deferred firing with something that has a ``size``, as :func:`fetch
    <tcpfiles.files.transfer.fetch>`'s :class:`~tcpfiles.files.transfer.Fetched`).  Names that
    cannot be a local file name are skipped.  A listing the server ended early (``--max-list``)
    is an :class:`IncompleteListing` in ``failed``: what it listed is still fetched, but the
    copy of that directory is partial.  Fires with the :class:`TreeResult`."""
    result = result if result is not None else TreeResult()
    return defer.Deferred.fromCoroutine(_mirror(session, remote_dir, local_dir, each, result))


async def _mirror(
    session: Session,
    remote_dir: str,
    local_dir: str,
    each: Callable[[str, str], defer.Deferred[Any]],
    result: TreeResult,
) -> TreeResult:
    entries = await session.run(lambda client, _retried: client.list(remote_dir))
    os.makedirs(local_dir, exist_ok=True)
    if not entries.complete:  # fetch what was listed, and report the directory as partial
        assert result.failed is not None
        result.failed.append((remote_dir or "/", IncompleteListing(remote_dir, entries)))
    for entry in entries:
        requestable = entry.kind is not wire.EntryKind.UNREQUESTABLE
        name = local_name(entry.raw_name) if requestable else None
        if name is None:  # not fetchable, or not a safe local name: listed as skipped
            assert result.skipped is not None
            result.skipped.append(f"{remote_dir.rstrip('/')}/{entry.display_name}")
            continue
        remote_child = f"{remote_dir.rstrip('/')}/{name}" if remote_dir.strip("/") else name
        local_child = os.path.join(local_dir, name)
        if entry.kind is wire.EntryKind.DIR:
            await _mirror(session, remote_child, local_child, each, result)
            continue
        try:
            fetched = await each(remote_child, local_child)
            result.files += 1
            result.bytes += fetched.size
        except (RemoteError, IntegrityError, OSError) as exc:
            assert result.failed is not None
            result.failed.append((remote_child, exc))
    return result


def make_parents(session: Session, remote_path: str) -> defer.Deferred[int]:
    """MKDIR every directory above ``remote_path`` that is missing (``a/b/c`` -> ``a``, ``a/b``).

    ``put report.pdf archive/2026/`` and ``put -r photos backup/photos`` work on a server where
    ``archive`` or ``backup`` do not exist yet.  Fires with the number of directories created.
    """
    return defer.Deferred.fromCoroutine(_make_parents(session, remote_path))


async def _make_parents(session: Session, remote_path: str) -> int:
    parts = [part for part in remote_path.split("/") if part]
    created = 0
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])

        def make(client: FilesClient, _retried: bool, parent: str = parent) -> defer.Deferred[bool]:
            return client.mkdir(parent)

        created += await session.run(make)
    return created


def upload_tree(
    session: Session,
    local_dir: str,
    remote_dir: str,
    each: Callable[[str, str], defer.Deferred[int]],
) -> defer.Deferred[TreeResult]:
    """``put -r``: recreate ``local_dir`` as ``remote_dir``; ``each(local, remote)`` uploads a
    file (a Deferred firing with its size).  Symlinks and special files are skipped (and
    listed).  Fires with the :class:`TreeResult`."""
    return defer.Deferred.fromCoroutine(_upload_tree(session, local_dir, remote_dir, each))


async def _upload_tree(
    session: Session,
    local_dir: str,
    remote_dir: str,
    each: Callable[[str, str], defer.Deferred[int]],
) -> TreeResult:
    result = TreeResult()
    assert result.skipped is not None and result.failed is not None
    try:
        await make_parents(session, remote_dir)
    except RemoteError as exc:
        result.failed.append((remote_dir, exc))
        return result
    for directory, dirs, files in os.walk(local_dir):  # top-down, links not followed
        dirs.sort()
        relative = os.path.relpath(directory, local_dir)
        remote = remote_dir if relative == "." else f"{remote_dir}/{relative}"

        def make(client: FilesClient, _retried: bool, remote: str = remote) -> defer.Deferred[bool]:
            return client.mkdir(remote)

        try:
            await session.run(make)
        except RemoteError as exc:
            result.failed.append((remote, exc))
            dirs[:] = []
            continue
        for name in sorted(files):
            local = os.path.join(directory, name)
            if not stat.S_ISREG(os.lstat(local).st_mode):
                result.skipped.append(local)
                continue
            try:
                sent = await each(local, f"{remote}/{name}")
                result.files += 1
                result.bytes += sent
            except (RemoteError, OSError) as exc:
                result.failed.append((local, exc))
    return result
