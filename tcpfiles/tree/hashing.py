"""sha256 of served files: cached and shared by file identity, bounded, chunked, abandonable.

A file is known by its identity, (device, inode, size, mtime_ns, ctime_ns), never by the path
that named it: ``big``, ``dotlink/big`` and ``dotlink/dotlink/big`` are one file, hashed once,
and a STAT that arrives while that file is being hashed waits for the same hash.

Hashing runs off the reactor thread in jobs of at most :attr:`HashLimits.job_bytes` each: a job
hashes that much of one file and returns, and the file goes to the back of a round-robin queue.
At most :attr:`HashLimits.threads` jobs run at once, so a small file's hash waits behind at most
one job of each file ahead of it, never behind whole files.  The queue is bounded: in total
(:attr:`HashLimits.max_hashes` files) and per owner (a client address,
:attr:`HashLimits.max_per_owner`); a STAT that would start a hash over a bound fails at once with
:class:`HashBusy` (``ERR busy``).  Waiting for a file already being hashed costs nothing and is
never refused.

A hash nobody waits for any more (every asker cancelled its Deferred: connections closed) is
abandoned, and :meth:`Hasher.abandon` abandons them all (shutdown).  A running job checks a
cancelled flag between reads, so it stops within one read.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from tcpfiles.tree.paths import FileChanging, PathError

__all__ = [
    "READ_SIZE",
    "HashBusy",
    "HashLimits",
    "Hasher",
    "Identity",
    "RunInThread",
    "hash_some",
    "identity",
    "inline",
    "make_hasher",
]

#: (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)
Identity = tuple[int, int, int, int, int]
RunInThread = Callable[..., defer.Deferred[Any]]

READ_SIZE = 1 << 20

log = Logger(namespace="tcpfiles.files")  # what the shutdown line has always been logged as


class HashBusy(PathError):
    """Too many files are being hashed (in total, or for this client), or shutting down."""

    code = "busy"


def identity(st: os.stat_result) -> Identity:
    """What makes two stats the same file with the same content, as far as a cache can tell."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class HashLimits:
    """The bounds of one :class:`Hasher`; the defaults are docs/protocol.md's."""

    #: Files being hashed (queued or running) at once, in total.
    max_hashes: int = 16
    #: Files being hashed at once on behalf of one owner (a client address).
    max_per_owner: int = 2
    #: Bytes one thread job hashes before the file goes to the back of the queue.
    job_bytes: int = 16 << 20
    #: Thread jobs running at once (the size of the hashing thread pool).
    threads: int = 2
    #: Digests remembered.
    cache_size: int = 4096


@dataclass(eq=False)
class _Job:
    """One file being hashed: its descriptor, progress, and who waits for the digest."""

    key: Identity
    fd: int
    digest: Any = field(default_factory=hashlib.sha256)
    offset: int = 0
    waiters: list[tuple[defer.Deferred[str], Hashable]] = field(default_factory=list)
    running: bool = False
    cancelled: bool = False


def hash_some(job: _Job, limit: int) -> bool:
    """In a thread: hash up to ``limit`` more bytes of the job's file; True at end of file.

    Stops early (returning False) as soon as the job is cancelled.
    """
    end = job.offset + limit
    while job.offset < end:
        if job.cancelled:
            return False
        chunk = os.pread(job.fd, min(READ_SIZE, end - job.offset), job.offset)
        if not chunk:
            return True
        job.digest.update(chunk)
        job.offset += len(chunk)
    return False


class Hasher:
    """Computes, shares and caches file digests; see the module docstring.

    ``run_in_thread(f, *args)`` runs ``f`` off the reactor thread (a Deferred of its result); give
    it a pool of its own so nothing else (upload fsyncs) ever queues behind hashing.
    """

    def __init__(self, run_in_thread: RunInThread, limits: HashLimits | None = None) -> None:
        self.limits = limits or HashLimits()
        self._run = run_in_thread
        self._cache: OrderedDict[Identity, str] = OrderedDict()
        self._jobs: dict[Identity, _Job] = {}
        self._ready: deque[_Job] = deque()
        self._running = 0
        self._kicking = False
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Files being hashed (queued or running)."""
        return len(self._jobs)

    def sha256(self, fd: int, st: os.stat_result, owner: Hashable = None) -> defer.Deferred[str]:
        """The hex digest of the open regular file ``fd`` (whose fstat is ``st``).

        Takes ``fd`` over (closes it).  Fails with :class:`HashBusy` over a bound,
        :class:`~tcpfiles.tree.paths.FileChanging` if the file changed while it was hashed.
        Cancelling the Deferred stops waiting; the hash is abandoned if no one else waits.
        """
        key = identity(st)
        if key in self._cache:
            os.close(fd)
            self._cache.move_to_end(key)
            return defer.succeed(self._cache[key])
        job = self._jobs.get(key)
        if job is None:
            refusal = self._refusal(owner)
            if refusal:
                os.close(fd)
                return defer.fail(HashBusy(refusal))
            job = _Job(key, fd)
            self._jobs[key] = job
            self._ready.append(job)
        else:
            os.close(fd)
        waiter: defer.Deferred[str] = defer.Deferred(lambda d: self._forget(job, d))
        job.waiters.append((waiter, owner))
        self._kick()
        return waiter

    def abandon(self) -> int:
        """Stop every hash now and refuse new ones (shutdown); how many were abandoned."""
        self._closed = True
        jobs = list(self._jobs.values())
        for job in jobs:
            waiters = job.waiters
            self._cancel(job)
            for waiter, _owner in waiters:
                waiter.errback(HashBusy("the server is shutting down"))
        return len(jobs)

    def _refusal(self, owner: Hashable) -> str:
        if self._closed:
            return "the server is shutting down"
        if len(self._jobs) >= self.limits.max_hashes:
            return f"{len(self._jobs)} files are being hashed; try again later"
        if owner is not None:
            mine = sum(1 for job in self._jobs.values() if any(o == owner for _, o in job.waiters))
            if mine >= self.limits.max_per_owner:
                return f"{mine} of your files are being hashed; try again when they are done"
        return ""

    def _forget(self, job: _Job, waiter: defer.Deferred[str]) -> None:
        """A waiter cancelled: drop it; with nobody left waiting, abandon the hash."""
        job.waiters = [(w, o) for w, o in job.waiters if w is not waiter]
        if not job.waiters:
            self._cancel(job)

    def _cancel(self, job: _Job) -> None:
        job.cancelled = True
        job.waiters = []
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]
        if job in self._ready:
            self._ready.remove(job)
        if not job.running:
            self._close(job)

    def _close(self, job: _Job) -> None:
        if job.fd >= 0:
            os.close(job.fd)
            job.fd = -1

    def _kick(self) -> None:
        """Start thread jobs while there is room; never recursive (an inline runner is fine)."""
        if self._kicking:
            return
        self._kicking = True
        try:
            while self._ready and self._running < self.limits.threads:
                job = self._ready.popleft()
                job.running = True
                self._running += 1
                d = self._run(hash_some, job, self.limits.job_bytes)
                d.addBoth(self._step_done, job)
        finally:
            self._kicking = False

    def _step_done(self, result: bool | Failure, job: _Job) -> None:
        job.running = False
        self._running -= 1
        if job.cancelled:
            self._close(job)
        elif isinstance(result, Failure):
            self._finish(job, result)
        elif result:
            self._finish(job, self._digest(job))
        else:
            self._ready.append(job)
        self._kick()

    def _digest(self, job: _Job) -> str | Failure:
        """The finished digest, if the file is still what it was when the hash began."""
        try:
            now = identity(os.fstat(job.fd))
        except OSError:
            return Failure()
        if now != job.key or job.offset != job.key[2]:
            return Failure(FileChanging("the file changed while it was hashed; try again"))
        digest: str = job.digest.hexdigest()
        self._cache[job.key] = digest
        while len(self._cache) > self.limits.cache_size:
            self._cache.popitem(last=False)
        return digest

    def _finish(self, job: _Job, result: str | Failure) -> None:
        waiters = job.waiters
        del self._jobs[job.key]
        job.waiters = []
        self._close(job)
        for waiter, _owner in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)


def inline(f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    """Run ``f`` now, on this thread (for tests and tools that do not mind blocking)."""
    return defer.maybeDeferred(f, *args)


def make_hasher(reactor: Any, limits: HashLimits, pool: ThreadPool | None = None) -> Hasher:
    """A :class:`Hasher` whose jobs run on a thread pool of its own, stopped with the reactor.

    Its own pool: nothing else (upload fsyncs, on the reactor's pool) ever queues behind a hash.
    The pool starts when the reactor runs.  At reactor shutdown ("during": after the services'
    grace period, which runs "before") the hashes still queued are abandoned, then the pool is
    stopped.  That order matters: Twisted's ``ThreadPool.stop`` runs every job still queued
    before joining its threads; here at most ``limits.threads`` jobs are queued, and each stops
    within one read, as a job checks its cancelled flag between reads.  ``pool``: for tests.
    """
    pool = pool or ThreadPool(0, limits.threads, "tcpfiles-hashing")

    def run(f: Any, *args: Any) -> defer.Deferred[Any]:
        return threads.deferToThreadPool(reactor, pool, f, *args)

    hasher = Hasher(run, limits)

    def stop() -> None:
        if count := hasher.abandon():
            log.info("shutting down: abandoned {count} hash(es) in progress", count=count)
        pool.stop()

    reactor.callWhenRunning(pool.start)
    reactor.addSystemEventTrigger("during", "shutdown", stop)
    return hasher
