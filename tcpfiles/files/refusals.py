"""How the files server says no when the file tree refuses, or the system runs short."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from tcpfiles.files import wire
from tcpfiles.tree.paths import PathError, exhausted

log = Logger(namespace="tcpfiles.files")


def refusal_of(exc: BaseException | None) -> PathError | None:
    """The refusal a failed request is answered with: its PathError, or busy for an OSError of
    exhausted resources; None for anything else (a bug: logged, answered internal)."""
    return exc if isinstance(exc, PathError) else exhausted(exc)


def request_path(request: wire.Request) -> str:
    """The path a request named, for an error message (``err_line`` escapes the whole text:
    escaping here too showed ``a\\b`` as ``a\\\\b``)."""
    return getattr(request, "path", "") or "/"


def answer_failure(
    conn: Any, failure: Failure, doing: str, internal: str, path: str | None = None
) -> None:
    """Answer a request whose work failed: its refusal (followed by the ``path`` it named, when
    given), else ``ERR internal`` with ``internal`` and the traceback logged as ``doing`` failed."""
    error = refusal_of(failure.value)
    if error is not None:
        conn.error(error.code, str(error) if path is None else f"{error}: {path}")
        return
    log.failure(
        "{peer} {request}: {doing} failed",
        failure,
        peer=conn.peer,
        request=conn.request_text,
        doing=doing,
    )
    conn.error("internal", internal)
