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
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet import defer, error, task

from tcpfiles.files import wire
from tcpfiles.files.client import (
    ConnectionClosed,
    FilesClient,
    IncompleteListing,
    IntegrityError,
    RemoteError,
    TLSFailure,
    WrongServer,
    connect,
)

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


class Session:
    """A connection to a files server that is made again when it is lost mid-operation."""

    def __init__(
        self,
        reactor: Any,
        server: str,
        retry_for: float = 60.0,
        timeout: float | None = 30.0,
        on_notice: Callable[[str], None] | None = None,
        policy: Callable[[int], float] | None = None,
        connector: Callable[[], defer.Deferred[FilesClient]] | None = None,
        ca: str | None = None,
        insecure: bool = False,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.reactor = reactor
        self.server = server
        self.retry_for = retry_for
        self.timeout = timeout
        self.on_notice = on_notice or (lambda message: None)
        self.policy = policy or backoffPolicy(initialDelay=0.5, maxDelay=10.0)
        self._connect = connector or (
            lambda: connect(reactor, server, timeout, ca=ca, insecure=insecure)
        )
        self._client: FilesClient | None = None
        self.connected_once = False
        self.credentials = credentials

    @defer.inlineCallbacks
    def client(self) -> Any:
        """The current connection, made if there is none."""
        if self._client is None or self._client.protocol.closed:
            client = yield self._connect()
            if self.credentials is not None:
                try:  # on every connection, also after a loss
                    yield client.login(*self.credentials)
                except BaseException:
                    client.close()  # a refused (or busy) login must not leave it open
                    raise
            self._client = client
            self.connected_once = True
        return self._client

    @defer.inlineCallbacks
    def run(self, operation: Callable[[FilesClient, bool], defer.Deferred[Any]]) -> Any:
        """``operation(client, retried)``, again on a new connection after a loss or ``busy``.

        The first connection failing is reported at once (a wrong address should not wait a
        minute); after that, attempts go on for ``retry_for`` seconds from the first failure.
        """
        failures = 0
        deadline: float | None = None
        while True:
            try:
                client = yield self.client()
                return (yield operation(client, failures > 0))
            except (ConnectionClosed, error.ConnectError, error.DNSLookupError, RemoteError) as exc:
                if isinstance(exc, RemoteError) and exc.code != "busy":
                    raise
                if isinstance(exc, TLSFailure | WrongServer):  # it would fail the same way again
                    raise
                if not self.connected_once:
                    raise
                self.close()  # busy or lost: start again on a new connection, this one closed
                failures += 1
                now = self.reactor.seconds()
                deadline = deadline if deadline is not None else now + self.retry_for
                delay = self.policy(failures)
                if now + delay > deadline:
                    raise
                self.on_notice(f"{_why(exc)}; retrying in {delay:.1f} s")
                yield task.deferLater(self.reactor, delay, lambda: None)

    def close(self) -> None:
        """Close the connection, if any."""
        if self._client is not None and not self._client.protocol.closed:
            self._client.close()
        self._client = None


def _why(exc: BaseException) -> str:
    if isinstance(exc, RemoteError):
        return f"server busy ({exc.text})"
    if isinstance(exc, error.ConnectionRefusedError):
        return "server not reachable (connection refused)"
    return str(exc) or type(exc).__name__


def local_name(raw: bytes) -> str | None:
    """A remote name as a safe local one, or None.

    None for ``.``, ``..``, a slash, NUL, bytes that are not UTF-8, and any character that
    ``ls`` would have to escape to show it safely (controls, bidi overrides, zero-width and
    line-separator characters, private use): such a name would mislead on a terminal.
    """
    if raw in (b"", b".", b"..") or b"/" in raw or b"\0" in raw:
        return None
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return name if wire.escape_text(name) == name.replace("\\", "\\\\") else None


@dataclass
class TreeResult:
    """What a tree transfer did."""

    files: int = 0
    bytes: int = 0
    skipped: list[str] | None = None
    failed: list[tuple[str, BaseException]] | None = None

    def __post_init__(self) -> None:
        self.skipped = self.skipped or []
        self.failed = self.failed or []


@defer.inlineCallbacks
def mirror(
    session: Session,
    remote_dir: str,
    local_dir: str,
    each: Callable[[str, str], Any],
    result: TreeResult | None = None,
) -> Any:
    """``get -r``: recreate ``remote_dir`` under ``local_dir``; ``each(remote, local)`` fetches a
    file (returning a Deferred).  Names that cannot be a local file name are skipped.  A listing
    the server ended early (``--max-list``) is an :class:`IncompleteListing` in ``failed``: what
    it listed is still fetched, but the copy of that directory is partial."""
    result = result if result is not None else TreeResult()
    entries = yield session.run(lambda client, _retried: client.list(remote_dir))
    os.makedirs(local_dir, exist_ok=True)
    if not entries.complete:  # fetch what was listed, and report the directory as partial
        assert result.failed is not None
        result.failed.append((remote_dir or "/", IncompleteListing(remote_dir, entries)))
    for entry in entries:
        name = local_name(entry.name) if entry.kind in ("f", "d") else None
        if name is None:  # not fetchable ("x"), or not a safe local name: listed as skipped
            assert result.skipped is not None
            result.skipped.append(f"{remote_dir.rstrip('/')}/{entry.display_name}")
            continue
        remote_child = f"{remote_dir.rstrip('/')}/{name}" if remote_dir.strip("/") else name
        local_child = os.path.join(local_dir, name)
        if entry.kind == "d":
            yield mirror(session, remote_child, local_child, each, result)
            continue
        try:
            fetched = yield each(remote_child, local_child)
            result.files += 1
            result.bytes += fetched.size
        except (RemoteError, IntegrityError, OSError) as exc:
            assert result.failed is not None
            result.failed.append((remote_child, exc))
    return result


@defer.inlineCallbacks
def make_parents(session: Session, remote_path: str) -> Any:
    """MKDIR every directory above ``remote_path`` that is missing (``a/b/c`` -> ``a``, ``a/b``).

    ``put report.pdf archive/2026/`` and ``put -r photos backup/photos`` work on a server where
    ``archive`` or ``backup`` do not exist yet.  Fires with the number of directories created.
    """
    parts = [part for part in remote_path.split("/") if part]
    created = 0
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])

        def make(client: FilesClient, _retried: bool, parent: str = parent) -> Any:
            return client.mkdir(parent)

        created += bool((yield session.run(make)))
    return created


@defer.inlineCallbacks
def upload_tree(
    session: Session, local_dir: str, remote_dir: str, each: Callable[[str, str], Any]
) -> Any:
    """``put -r``: recreate ``local_dir`` as ``remote_dir``; ``each(local, remote)`` uploads a
    file.  Symlinks and special files are skipped (and listed)."""
    result = TreeResult()
    assert result.skipped is not None and result.failed is not None
    try:
        yield make_parents(session, remote_dir)
    except RemoteError as exc:
        result.failed.append((remote_dir, exc))
        return result
    for directory, dirs, files in os.walk(local_dir):  # top-down, links not followed
        dirs.sort()
        relative = os.path.relpath(directory, local_dir)
        remote = remote_dir if relative == "." else f"{remote_dir}/{relative}"

        def make(client: FilesClient, _retried: bool, remote: str = remote) -> Any:
            return client.mkdir(remote)

        try:
            yield session.run(make)
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
                sent = yield each(local, f"{remote}/{name}")
                result.files += 1
                result.bytes += sent
            except (RemoteError, OSError) as exc:
                result.failed.append((local, exc))
    return result
