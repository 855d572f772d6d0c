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

:func:`batched_text_observer` is twistd's own text log (the same lines, to the same file), made
cheaper: twistd's observer formats the time (a time-zone computation and ``strftime``) and
writes and flushes the file once per event, a fifth of the server's CPU for a small GET
(measured, docs/performance.md).  This one formats each second once and hands the lines to the
file in batches: at most :data:`FLUSH_DELAY` seconds later, at once for a warning or worse, when
:data:`FLUSH_BYTES` have gathered, when the reactor shuts down and when the process exits.
``twistd tcpfiles`` uses it whenever twistd would have used its text observer
(:func:`tcpfiles.tap.makeService`).
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    eventAsJSON,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python.compat import ioType
from twisted.python.log import ILogObserver as LegacyLogObserver
from twisted.python.logfile import LogFile
from zope.interface import implementer

#: The environment variable naming the file :func:`json_logger` appends to ("-" or unset: stdout).
__all__ = [
    "ENVIRONMENT",
    "FLUSH_BYTES",
    "FLUSH_DELAY",
    "WHOLE_WRITE",
    "BatchedFile",
    "ReopeningFile",
    "as_json_line",
    "batch_twistd_text_log",
    "batched_text_observer",
    "cached_time_format",
    "json_lines",
    "json_logger",
    "twistd_log_file",
    "whole_writes",
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


#: Seconds a line may wait before it is written (a warning or worse is written at once).
FLUSH_DELAY = 0.1
#: Bytes gathered that are written at once, without waiting for the delay.
FLUSH_BYTES = 64 * 1024
_URGENT = frozenset({LogLevel.warn, LogLevel.error, LogLevel.critical})


class BatchedFile:
    """Lines gathered in memory and written to ``out`` (then flushed) in batches.

    :meth:`write` only appends, and has ``reactor`` call :meth:`flush` ``delay`` seconds later
    (the timer is set through ``callFromThread``, the one reactor call that is safe from
    another thread and from a signal handler: events are logged from the thread pool, and
    from Twisted's SIGTERM handler, which may run in the middle of a write);
    :meth:`flush` writes everything gathered, in as few ``write`` calls as keep each one whole on
    a pipe shared with other processes (:func:`whole_writes`).  An event logged while a flush is
    writing (a signal handler's, in the same thread) is written by that flush, after what it
    was writing: nothing waits for itself.  Nothing is lost on a clean exit: once the reactor
    has shut down, what is gathered is written and every later line ("Main loop terminated.",
    "Server Shut Down.") is written at once (twistd then ends by raising the signal that
    stopped it again: no ``atexit`` handler runs); a process that exits otherwise writes what
    is left when the interpreter exits.
    """

    def __init__(
        self,
        out: IO[Any],
        reactor: Any,
        delay: float = FLUSH_DELAY,
        limit: int = FLUSH_BYTES,
    ) -> None:
        self.out = out
        self.reactor = reactor
        self.delay = delay
        self.limit = limit
        self._encoding = None if ioType(out) is str else "utf-8"
        self._lines: deque[str] = deque()
        self._size = 0
        self._armed = False
        self._direct = False  # the reactor has stopped: each line is written at once
        self._flushing = False  # a flush is writing (a signal handler may log meanwhile)
        self._lock = threading.RLock()  # flushes, one at a time (a signal handler's re-enters)
        reactor.addSystemEventTrigger("after", "shutdown", self.unbatch)
        atexit.register(self.flush)

    def unbatch(self) -> None:
        """Write what is gathered, and every later line at once."""
        self._direct = True
        self.flush()

    def write(self, text: str, urgent: bool = False) -> None:
        """Gather ``text``; written now if ``urgent`` or if enough has gathered.

        No lock: appending to a deque is atomic, and :meth:`flush` takes lines from its other
        end; the gathered size and the timer's flag are hints, which a race between threads
        makes flush early or once more, never lose a line (the lock was a third of the cost
        of logging a request, measured).  A line gathered after the timer has cleared its
        flag arms a timer of its own.
        """
        self._lines.append(text)
        self._size += len(text)
        if urgent or self._direct or self._size >= self.limit:
            self.flush()
        elif not self._armed:
            self._armed = True
            self.reactor.callFromThread(self.reactor.callLater, self.delay, self._timer)

    def _timer(self) -> None:
        self._armed = False
        self.flush()

    def flush(self) -> None:
        """Write and flush everything gathered (the file is not written to otherwise)."""
        with self._lock:
            if self._flushing:  # re-entered: the loop below writes what was just added
                return
            self._flushing = True
            try:
                gathered = self._lines
                while gathered:
                    self._size = 0
                    lines = [gathered.popleft() for _ in range(len(gathered))]
                    for piece in whole_writes(lines):
                        self._write(piece)
            finally:
                self._flushing = False

    def _write(self, text: str) -> None:
        try:
            self.out.write(text if self._encoding is None else text.encode(self._encoding))
            self.out.flush()
        except (OSError, ValueError):  # closed at exit, disk full: as twistd's would, drop
            pass


#: Bytes that one write to a pipe delivers whole (POSIX's ``PIPE_BUF``): ``--workers`` share
#: their parent's standard output, and a longer write may be cut by another process's line.
WHOLE_WRITE = select.PIPE_BUF


def whole_writes(events: list[str], limit: int = WHOLE_WRITE) -> Iterator[str]:
    """``events`` (each one event's text: a line, with its continuation lines) joined into as
    few pieces as can each be written whole: at most ``limit`` bytes, never an event cut in
    two (a longer event is a piece of its own)."""
    piece: list[str] = []
    size = 0
    for text in events:
        length = len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))
        if piece and size + length > limit:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(text)
        size += length
    if piece:
        yield "".join(piece)


def cached_time_format(
    time_format: str | None = timeFormatRFC3339,
) -> Callable[[float | None], str]:
    """twisted.logger's ``formatTime`` with ``time_format``, computed once per second.

    The formats twistd uses show whole seconds (and the time-zone offset, which changes only
    on a whole second): every event of one second gets the same text, as before.
    """
    last: list[Any] = [None, ""]

    def format_time(when: float | None) -> str:
        if when is None:
            return formatTime(when, time_format)
        second = int(when)
        if second != last[0]:
            last[1] = formatTime(second, time_format)
            last[0] = second
        text: str = last[1]
        return text

    return format_time


@implementer(ILogObserver)
class _BatchedTextObserver:
    """``formatEventAsClassicLogText``, with a shortcut for the usual event: a format with no
    fields (the per-request event's is one: its text is rendered before it is logged), no
    traceback; its line is put together here, as Twisted would (the tests compare both)."""

    def __init__(self, out: BatchedFile, time_format: str | None) -> None:
        self.out = out
        self.format_time = cached_time_format(time_format)
        self._systems: dict[tuple[Any, Any], str] = {}

    def __call__(self, event: LogEvent) -> None:
        level = event.get("log_level")
        text = event.get("log_format")
        if (
            type(text) is str
            and text
            and "{" not in text
            and "}" not in text
            and "log_failure" not in event
            and "log_flattened" not in event
        ):
            line = (
                f"{self.format_time(event.get('log_time'))} [{self._system(event, level)}] {text}"
            )
            text = (line.replace("\n", "\n\t") if "\n" in line else line) + "\n"
        else:
            text = formatEventAsClassicLogText(event, formatTime=self.format_time)
        if text:
            self.out.write(text, level in _URGENT)

    def _system(self, event: LogEvent, level: Any) -> str:
        """``[system]``: ``log_system``, else namespace#level (Twisted's ``_formatSystem``)."""
        system = event.get("log_system")
        if system is not None:
            try:
                return str(system)
            except Exception:  # noqa: BLE001 - what Twisted writes then
                return "UNFORMATTABLE"
        key = (event.get("log_namespace", "-"), level)
        known = self._systems.get(key)
        if known is None:
            if len(self._systems) > 1024:  # namespaces are few; bounded all the same
                self._systems.clear()
            known = f"{key[0]}#{'-' if level is None else level.name}"
            self._systems[key] = known
        return known


def batched_text_observer(
    out: IO[Any], reactor: Any, time_format: str | None = timeFormatRFC3339
) -> ILogObserver:
    """twistd's text log observer (``textFileLogObserver``: the same lines), written to
    ``out`` in batches (:class:`BatchedFile`) with each second's time formatted once."""
    return _BatchedTextObserver(BatchedFile(out, reactor), time_format)


def twistd_log_file(logfile: str | None, nodaemon: bool, reactor: Any) -> IO[Any] | None:
    """The file twistd's text observer would write to for these options (twistd's
    ``UnixAppLogger``): standard output for ``-`` or under ``-n`` without ``--logfile``, else
    the rotated ``LogFile`` (``twistd.log`` by default), rotated on SIGUSR1 too unless a
    handler is set.  None where twistd would refuse (a daemon logging to standard output)."""
    if logfile == "-" or (nodaemon and not logfile):
        return sys.stdout if nodaemon else None
    log_file = LogFile.fromFullPath(logfile or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(*_signal: Any) -> None:
            reactor.callFromThread(log_file.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return log_file  # type: ignore[return-value]


def batch_twistd_text_log(top: Any, twistd_options: Any, reactor: Any) -> None:
    """Where twistd would log with its text observer (no ``--logger``, no ``--syslog``), give
    it :func:`batched_text_observer` instead: the same lines to the same file,
    a fifth of the CPU of a small GET less (docs/performance.md).

    twistd asks the application it makes for an ``ILogObserver`` component before falling back
    to its own, after ``makeService`` has returned and the service has joined the application:
    the component is set there, when the service joins it.
    """
    if twistd_options.get("logger") or twistd_options.get("syslog"):
        return
    join = top.setServiceParent

    def set_service_parent(parent: Any) -> Any:
        if (
            hasattr(parent, "setComponent")
            and parent.getComponent(ILogObserver, None) is None
            and parent.getComponent(LegacyLogObserver, None) is None
        ):
            out = twistd_log_file(
                twistd_options.get("logfile"), bool(twistd_options.get("nodaemon")), reactor
            )
            if out is not None:
                parent.setComponent(ILogObserver, batched_text_observer(out, reactor))
        return join(parent)

    top.setServiceParent = set_service_parent  # type: ignore[method-assign]
