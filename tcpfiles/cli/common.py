"""What every ``tcpfiles`` command shares: exit statuses, default servers, the one way to report
a failure on stderr, and the Ctrl-C / SIGTERM handling while a command runs."""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Any

from twisted.internet import error

from tcpfiles.files.client import CannotConnect, RemoteError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_CONNECTION, EXIT_LOCAL = 0, 1, 2, 3, 4
#: An interrupted command exits 128 + the signal's number (130 for Ctrl-C), as shells do.
DEFAULT_SERVER = "localhost:8888"
DEFAULT_ONESHOT = "localhost:8887"
DEFAULT_CHAT = "localhost:9000"
DEFAULT_ECHO = "localhost:7777"


class Failed(Exception):
    """A failure already worded for the user, with its exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Interruption:
    """Ctrl-C (SIGINT) or SIGTERM while the command runs: stop cleanly, say so once, exit 130.

    Twisted's own handler would stop the reactor and let the command end as if it had succeeded
    (exit 0), after printing retry notices for the connection it was closing.
    """

    def __init__(self) -> None:
        self.signum = 0
        self.message = "interrupted"

    def install(self, reactor: Any) -> None:
        """Replace the reactor's handlers once it runs (it installs its own SIGTERM handler when
        it starts, over any set before: SIGTERM then ended a get with exit 0)."""

        def replace() -> None:
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(
                    signum, lambda n, _frame: reactor.callFromThread(self._stop, reactor, n)
                )

        replace()  # from now on, for a signal that comes before the reactor runs
        reactor.callWhenRunning(replace)

    def _stop(self, reactor: Any, signum: int) -> None:
        if self.signum:
            return
        self.signum = signum
        print(f"tcpfiles: {self.message}", file=sys.stderr)
        with contextlib.suppress(error.ReactorNotRunning):
            reactor.stop()


interruption = Interruption()


def connection_failed(server: str, exc: BaseException) -> Failed:
    if isinstance(exc, ValueError):
        return Failed(f"--server {server!r}: {exc}", EXIT_USAGE)
    return Failed(f"cannot connect to {server}: {reason(exc)}", EXIT_CONNECTION)


def reason(exc: BaseException) -> str:
    if isinstance(exc, CannotConnect):
        exc = exc.cause
    if isinstance(exc, error.ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(exc, error.DNSLookupError):
        return "unknown host"
    if isinstance(exc, error.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def say(message: str) -> None:
    if not interruption.signum:  # after Ctrl-C, only the one "interrupted" line
        print(f"tcpfiles: {message}", file=sys.stderr)


def refusal(what: str, exc: RemoteError) -> str:
    """A server's ERR as one line; "log in first" tells a CLI user about --user."""
    if exc.code == "unauthorized" and exc.text.startswith("log in first"):
        return f"{what}: the server has accounts: log in with --user NAME (unauthorized)"
    return f"{what}: {exc.text} ({exc.code})"


def local_problem(exc: OSError, fallback: str) -> str:
    """One rule for local file errors: the local path, then the reason (exit status 4)."""
    path = exc.filename if isinstance(exc.filename, str) else fallback
    return f"cannot use {path}: {exc.strerror or exc}"


def standard_io(protocol: Any) -> Any:
    from twisted.internet import stdio

    return stdio.StandardIO(protocol)
