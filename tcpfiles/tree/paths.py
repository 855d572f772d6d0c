"""Wire paths and confinement: the one place where a client's path meets the file system.

:func:`parse_path` checks a path from the wire and splits it into parts (rejecting, never
rewriting).  :func:`open_beneath` opens those parts below a root by walking directory file
descriptors one part at a time, resolving symlinks itself, so that nothing outside the root is
ever opened, a FIFO or device is never opened at all, and a file swapped for a symlink between
two steps is caught by ``O_NOFOLLOW``.  An escaping symlink, a missing file and a path through a
non-directory all raise the same :class:`NotFound`, so a client learns nothing about what lies
outside the root.  Running out of descriptors or memory (``EMFILE``, ``ENFILE``, ``ENOMEM``,
``ENOBUFS``) is never "missing": :func:`os_error` maps it to :class:`Exhausted` (``busy``), the one
place where that mapping is made.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field

__all__ = [
    "EXHAUSTION_ERRNOS",
    "MAX_DEPTH",
    "MAX_PART_BYTES",
    "MAX_PATH_BYTES",
    "MAX_SYMLINK_HOPS",
    "MAX_WALK_STEPS",
    "BadPath",
    "Exhausted",
    "FileChanging",
    "Forbidden",
    "NotADirectory",
    "NotAFile",
    "NotFound",
    "PathError",
    "Root",
    "exhausted",
    "open_beneath",
    "open_file_beneath",
    "os_error",
    "parse_path",
    "stat_beneath",
]

MAX_PART_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_SYMLINK_HOPS = 40
#: Directory levels a path may have, as sent and as walked through symlinks: a walk holds one
#: descriptor per level (a 2,047-level tree made with MKDIR held 2,047 per request).
MAX_DEPTH = 128
#: Parts one walk may look at in all, symlink targets included: 40 links of 4 KiB of ``a/../``
#: each made one GET walk 32,400 parts and hold the reactor 158 ms.
MAX_WALK_STEPS = 1024

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class PathError(Exception):
    """Base for every refusal; ``code`` is the wire error code."""

    code = "internal"


class BadPath(PathError):
    """The path itself is not acceptable (``..``, control characters, too long, ...)."""

    code = "bad-request"


class NotFound(PathError):
    """Missing, outside the root, or behind an escaping or looping symlink: one answer for all."""

    code = "not-found"


class Forbidden(PathError):
    """Inside the root, but the server's user may not open it."""

    code = "forbidden"


class NotAFile(PathError):
    """A regular file was needed (directory, FIFO, device, socket)."""

    code = "not-a-file"


class NotADirectory(PathError):
    """A directory was needed."""

    code = "not-a-directory"


class FileChanging(PathError):
    """The file changed under us more than once while we read it; worth retrying later."""

    code = "busy"


class Exhausted(PathError):
    """The server ran out of file descriptors or memory: retryable, says nothing about the path."""

    code = "busy"


#: errno values that mean "out of descriptors or memory", not anything about the file.
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def exhausted(exc: BaseException | None) -> Exhausted | None:
    """:class:`Exhausted` if ``exc`` is an ``OSError`` of resource exhaustion, else None."""
    if isinstance(exc, OSError) and exc.errno in EXHAUSTION_ERRNOS:
        return Exhausted(f"the server is out of resources ({os.strerror(exc.errno)}); try again")
    return None


def os_error(exc: OSError) -> PathError:
    """The refusal an ``OSError`` from opening or inspecting a path stands for."""
    busy = exhausted(exc)
    if busy is not None:
        return busy
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Forbidden("permission denied")
    return NotFound("no such file or directory")


#: What a path may not contain: control characters (C0, DEL, C1) and the backslash.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\\\\]")


def parse_path(text: str) -> tuple[str, ...]:
    """Split a wire path into its parts; raise :class:`BadPath` for anything we refuse.

    ``/`` separates parts; a leading ``/`` means the root and empty parts (``a//b``) are ignored.
    ``.`` and ``..`` parts, control characters, backslashes, parts over 255 bytes, paths over
    4096 bytes and paths deeper than :data:`MAX_DEPTH` are refused.  Nothing is decoded or
    normalised: ``%2e%2e`` is a literal name.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise BadPath(f"path longer than {MAX_PATH_BYTES} bytes")
    if _FORBIDDEN.search(text):
        raise BadPath("path contains a control character or a backslash")
    parts = tuple(part for part in text.split("/") if part)
    for part in parts:
        if part in (".", ".."):
            raise BadPath("'.' and '..' are not allowed in paths")
        # A character is at most 4 bytes: only a long part needs encoding to be measured.
        if (
            len(part) * 4 > MAX_PART_BYTES
            and len(part.encode("utf-8", "surrogatepass")) > MAX_PART_BYTES
        ):
            raise BadPath(f"a path part is longer than {MAX_PART_BYTES} bytes")
    if len(parts) > MAX_DEPTH:
        raise BadPath(f"path deeper than {MAX_DEPTH} levels")
    return parts


@dataclass(frozen=True)
class Root:
    """A served directory, as given and as resolved once at start-up."""

    path: str
    real: str
    #: The root's own descriptor once opened (see :meth:`fd`); a list so a frozen Root can fill it.
    _fd: list[int] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def at(cls, path: str) -> Root:
        """Check that ``path`` is a directory and remember its absolute and real forms."""
        absolute = os.path.abspath(path)
        if not os.path.isdir(absolute):
            raise NotADirectoryError(f"{path!r} is not a directory")
        return cls(absolute, os.path.realpath(absolute))

    def fd(self) -> int:
        """The root directory's descriptor, opened once and kept (not to be closed).

        Re-opening it for every request cost 8% of the time of small GETs.  If the directory is
        replaced while the server runs, the server keeps serving the one it opened.
        """
        if not self._fd:
            try:
                self._fd.append(os.open(self.real, _DIR_FLAGS & ~os.O_NOFOLLOW))
            except OSError as exc:
                raise os_error(exc) from None
        return self._fd[0]

    def relative_parts(self, target: str) -> list[str] | None:
        """Parts of an absolute symlink target below this root, or None when it points outside."""
        for base in {self.real, self.path}:
            if target == base:
                return []
            if target.startswith(base.rstrip("/") + "/"):
                return target[len(base.rstrip("/")) + 1 :].split("/")
        return None


def open_beneath(root: Root, parts: tuple[str, ...], *, want: str = "file") -> int:
    """Open ``parts`` below ``root`` and return the file descriptor; the caller closes it.

    ``want`` is ``"file"`` (a regular file opened for reading), ``"dir"`` (a directory) or
    ``"any"`` (either; tell them apart with ``fstat``).  Symlinks are followed only while they
    stay inside the root.  Raises a
    :class:`PathError` subclass; never blocks on a FIFO or device, because those are recognised
    with ``lstat`` and never opened.
    """
    return _walk(root, parts, want)[0]


def stat_beneath(root: Root, parts: tuple[str, ...]) -> os.stat_result:
    """``fstat`` of what ``parts`` lead to below ``root``, resolved exactly as reads resolve it
    (a symlink leaving the root, dangling or looping is :class:`NotFound`)."""
    fd = open_beneath(root, parts, want="any")
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def open_file_beneath(root: Root, parts: tuple[str, ...]) -> tuple[int, os.stat_result]:
    """:func:`open_beneath` for a regular file, with the ``fstat`` of what was opened."""
    fd, st = _walk(root, parts, "file")
    assert st is not None
    return fd, st


def _walk(root: Root, parts: tuple[str, ...], want: str) -> tuple[int, os.stat_result | None]:
    root_fd = root.fd()
    stack: list[int] = []  # descriptors we opened, from below the root down to the current one
    pending = list(reversed(parts))  # parts still to walk, next one last
    hops = steps = 0
    try:
        while pending:
            name = pending.pop()
            steps += 1
            if steps > MAX_WALK_STEPS:  # crafted link targets: as unresolvable as a loop
                raise NotFound("no such file or directory")
            if name in ("", "."):
                continue
            if name == "..":  # only ever from a symlink target
                if not stack:
                    raise NotFound("no such file or directory")
                os.close(stack.pop())
                continue
            parent = stack[-1] if stack else root_fd
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except OSError as exc:
                raise os_error(exc) from None
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise NotFound("no such file or directory")
                try:
                    target = os.readlink(name, dir_fd=parent)
                except OSError as exc:
                    raise os_error(exc) from None
                if target.startswith("/"):
                    inside = root.relative_parts(target)
                    if inside is None:
                        raise NotFound("no such file or directory")
                    while stack:
                        os.close(stack.pop())
                    pending.extend(reversed(inside))
                else:
                    pending.extend(reversed(target.split("/")))
                continue
            if stat.S_ISDIR(st.st_mode):
                if len(stack) >= MAX_DEPTH:  # deeper through symlinks than a path may be
                    raise NotFound("no such file or directory")
                try:
                    stack.append(os.open(name, _DIR_FLAGS, dir_fd=parent))
                except OSError as exc:
                    raise os_error(exc) from None
                continue
            # Not a directory: it must be the last part, and a file is what we came for.
            if any(part not in ("", ".") for part in pending):
                raise NotFound("no such file or directory")
            if want == "dir":
                raise NotADirectory("not a directory")
            if not stat.S_ISREG(st.st_mode):
                raise NotAFile("not a regular file")
            return _open_regular(parent, name)
        if want == "file":
            raise NotAFile("is a directory")
        if stack:
            return stack.pop(), None
        try:
            return os.dup(root_fd), None
        except OSError as exc:
            raise os_error(exc) from None
    finally:
        for fd in stack:
            os.close(fd)


def _open_regular(dir_fd: int, name: str) -> tuple[int, os.stat_result]:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # swapped for a symlink since lstat
            raise NotFound("no such file or directory") from None
        raise os_error(exc) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # swapped for something else since lstat
        os.close(fd)
        raise NotAFile("not a regular file")
    return fd, st
