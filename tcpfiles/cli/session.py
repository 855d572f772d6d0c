"""What ``get``, ``put`` and ``ls`` share: a files :class:`Session` opened for the command, one
transfer run with retries and a progress bar, and failures sorted into exit statuses."""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet import defer, error

from tcpfiles.cli.common import (
    DEFAULT_SERVER,
    EXIT_CONNECTION,
    EXIT_LOCAL,
    EXIT_OK,
    EXIT_REFUSED,
    Failed,
    connection_failed,
    local_problem,
    refusal,
    say,
)
from tcpfiles.cli.options import warn_if_insecure
from tcpfiles.cli.progress import ProgressBar
from tcpfiles.files.client import (
    CannotConnect,
    ConnectionClosed,
    FilesClient,
    IntegrityError,
    RemoteError,
    TLSFailure,
    WrongServer,
)
from tcpfiles.files.transfer import Session, TreeResult


@defer.inlineCallbacks
def with_session(reactor: Any, args: argparse.Namespace, work: Any) -> Any:
    """Connect (a first failure is final), run ``work(session)``, close."""
    server = args.server or DEFAULT_SERVER
    warn_if_insecure(args)
    session = Session(
        reactor,
        server,
        retry_for=args.retry_for,
        timeout=args.timeout,
        on_notice=say,
        ca=args.ca,
        insecure=args.insecure,
        credentials=args.credentials,
    )
    try:
        yield session.client()
    except RemoteError as exc:
        raise Failed(f"login refused: {exc.text} ({exc.code})", EXIT_REFUSED) from None
    except (TLSFailure, WrongServer) as exc:
        raise Failed(str(exc), EXIT_CONNECTION) from None
    except Exception as exc:
        raise connection_failed(server, exc) from None
    try:
        return (yield work(session))
    finally:
        session.close()


def one_transfer(session: Session, name: str, quiet: bool, operation: Any) -> Any:
    """Run ``operation(client, retried, start, progress)`` with retries and a progress bar."""
    bar = ProgressBar(name, enabled=not quiet)

    def attempt(client: FilesClient, retried: bool) -> Any:
        bar.close()  # a retry draws a fresh bar from where it resumes
        return operation(client, retried, bar.start, bar.advance)

    def done(result: Any) -> Any:
        bar.close()
        return result

    return session.run(attempt).addBoth(done)


class Outcome:
    """The exit status of several transfers: the first failure's kind wins."""

    def __init__(self) -> None:
        self.status = EXIT_OK

    def failed(self, what: str, exc: BaseException) -> None:
        """Report one failure; a lost connection ends the whole command."""
        if isinstance(exc, RemoteError) and exc.code == "exists":
            say(f"{what}: already on the server (--overwrite replaces it)")
            self.status = self.status or EXIT_REFUSED
        elif isinstance(exc, RemoteError):
            say(refusal(what, exc))
            self.status = self.status or EXIT_REFUSED
        elif isinstance(exc, TLSFailure | WrongServer):
            raise Failed(str(exc), EXIT_CONNECTION)
        elif isinstance(
            exc, ConnectionClosed | CannotConnect | error.ConnectError | error.DNSLookupError
        ):
            say(f"{what}: {exc}")
            raise Failed("gave up: the server stayed unreachable", EXIT_CONNECTION)
        elif isinstance(exc, IntegrityError):
            say(f"{what}: {exc}")
            self.status = self.status or EXIT_LOCAL
        elif isinstance(exc, OSError):
            say(local_problem(exc, what))
            self.status = self.status or EXIT_LOCAL
        else:
            raise exc

    def tree(self, result: TreeResult) -> None:
        """Report what a tree transfer skipped or failed."""
        for skipped in result.skipped or []:
            say(f"skipped {skipped}: not a regular file, or a name that cannot be used here")
        for what, exc in result.failed or []:
            self.failed(what, exc)
