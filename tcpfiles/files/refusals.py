"""How the files server says no when the file tree refuses, or the system runs short."""

from __future__ import annotations

from tcpfiles.files import wire
from tcpfiles.tree.paths import PathError, exhausted


def refusal_of(exc: BaseException | None) -> PathError | None:
    """The refusal a failed request is answered with: its PathError, or busy for an OSError of
    exhausted resources; None for anything else (a bug: logged, answered internal)."""
    return exc if isinstance(exc, PathError) else exhausted(exc)


def request_path(request: wire.Request) -> str:
    """The path a request named, for an error message (``err_line`` escapes the whole text:
    escaping here too showed ``a\\b`` as ``a\\\\b``)."""
    return getattr(request, "path", "") or "/"
