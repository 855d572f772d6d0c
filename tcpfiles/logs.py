"""Structured logs: one JSON object per line, for ``twistd --logger`` and log shippers.

::

    twistd --logger tcpfiles.logs.json_logger -n tcpfiles --root /srv/files

twistd calls the factory that ``--logger`` names with no arguments, once it has made the service
and before it starts it, and sends every event (those logged before too) to the observer it
returns, instead of the text log of ``--logfile``.
:func:`json_logger` writes each event as one line of JSON (twisted.logger's ``eventAsJSON``,
without the record separator of ``jsonFileLogObserver``'s default): every field of the event
(the per-request event's ``peer``, ``request``, ``outcome``, ``nbytes``, ``seconds``), twisted's
own (``log_time`` in seconds since the epoch, ``log_level`` as ``{"name": "info", ...}``,
``log_namespace``, ``log_format``) and ``log_text``, the message as the text log shows it.  The
lines go to standard output (under systemd, to the journal) or, when ``$TCPFILES_JSON_LOG`` names
a file, are appended to it; SIGUSR1 then has it reopened, for logrotate.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    eventAsJSON,
    formatEvent,
)

#: The environment variable naming the file :func:`json_logger` appends to ("-" or unset: stdout).
__all__ = [
    "ENVIRONMENT",
    "ReopeningFile",
    "as_json_line",
    "json_lines",
    "json_logger",
]

ENVIRONMENT = "TCPFILES_JSON_LOG"


def json_logger() -> ILogObserver:
    """For ``twistd --logger``: JSON lines appended to the file ``$TCPFILES_JSON_LOG`` names,
    reopened after SIGUSR1, or to standard output when it is unset or ``-``."""
    path = os.environ.get(ENVIRONMENT, "-")
    if path in ("", "-"):
        return json_lines(sys.stdout)  # the real one: twistd redirects sys.stdout to the log next
    out = ReopeningFile(path)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, out.reopen)
    return json_lines(out)


def json_lines(out: IO[str] | ReopeningFile) -> ILogObserver:
    """An observer that writes each event to ``out`` as one line of JSON (flushed)."""
    return FileLogObserver(out, as_json_line)  # type: ignore[arg-type]


def as_json_line(event: LogEvent) -> str:
    """``event`` (left as it is: other observers see it too), with ``log_text``, as a line."""
    return eventAsJSON(dict(event, log_text=formatEvent(event))) + "\n"


class ReopeningFile:
    """A log file opened for appending, reopened at the next write once :meth:`reopen` was
    called (by a signal handler: it only sets a flag), so that logrotate can move it away.  If
    it cannot be reopened, the lines keep going to the file open before."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = self._open()
        self._reopen = False

    def _open(self) -> IO[str]:
        return open(self.path, "a", encoding="utf-8")

    def reopen(self, *_signal: Any) -> None:
        """Reopen the file (by its name) before the next line."""
        self._reopen = True

    def write(self, text: str) -> None:
        if self._reopen:
            self._reopen = False
            try:
                reopened = self._open()
            except OSError as exc:
                self._file.write(as_json_line(_not_reopened(self.path, exc)))
            else:
                self._file.close()
                self._file = reopened
        self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _not_reopened(path: str, exc: OSError) -> LogEvent:
    """The event that says the file could not be reopened (written to the one still open)."""
    return {
        "log_namespace": "tcpfiles.logs",
        "log_level": LogLevel.warn,
        "log_time": time.time(),
        "log_format": "cannot reopen {path}: {reason}; writing on to the file open before",
        "path": path,
        "reason": exc.strerror or str(exc),
    }
