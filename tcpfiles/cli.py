"""The ``tcpfiles`` command: a thin layer over :mod:`tcpfiles.files.client`.

Exit status: 0 success; 1 the server refused a request (``ERR``); 2 bad usage; 3 could not
connect, or the connection was lost; 4 a local file problem, or what arrived failed its checks.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.internet import defer, error, task

from tcpfiles import __version__
from tcpfiles.chat.client import ChatSession
from tcpfiles.echo.client import run_echo_client
from tcpfiles.files.client import (
    ConnectionClosed,
    FilesClient,
    IncompleteListing,
    IntegrityError,
    RemoteError,
    TLSFailure,
    WrongServer,
    client_endpoint,
)
from tcpfiles.files.transfer import (
    Session,
    TreeResult,
    fetch,
    make_parents,
    mirror,
    push,
    sha256_of,
    upload_tree,
)
from tcpfiles.oneshot.client import MissingFile, NothingReceived, fetch_oneshot

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="tcpfiles",
        description="Talk to a tcpfiles server.",
        epilog="Exit status: 0 ok, 1 refused by the server, 2 usage, 3 connection, "
        "4 local file or integrity check.",
    )
    parser.add_argument("--version", action="version", version=f"tcpfiles {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def server_option(p: argparse.ArgumentParser, default: str | None) -> None:
        p.add_argument(
            "--server",
            "-s",
            default=default,
            metavar="HOST:PORT|ENDPOINT",
            help="server to use: HOST[:PORT] or a Twisted client endpoint string "
            f"such as tcp:host=example.org:port=8888 or tls:host=example.org:port=8888 "
            f"(default {default or DEFAULT_SERVER})",
        )
        p.add_argument(
            "--ca",
            metavar="FILE",
            help="TLS: trust the certificate authority in this PEM file (instead of "
            "the system's); with HOST:PORT it also turns TLS on",
        )
        p.add_argument(
            "--user",
            "-u",
            metavar="NAME",
            help="log in as NAME (servers with accounts); the password comes from "
            "$TCPFILES_PASSWORD, a netrc file, or a prompt on the terminal",
        )
        p.add_argument(
            "--netrc",
            metavar="FILE",
            default=os.path.expanduser("~/.netrc"),
            help="netrc file with 'machine HOST login NAME password PW' lines (default ~/.netrc)",
        )
        p.add_argument(
            "--insecure",
            action="store_true",
            help="TLS without checking the server's certificate: anyone in between "
            "can read and change the traffic",
        )

    def retry_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--retry-for",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="after the connection is lost, keep reconnecting (with backoff) and "
            "resuming for this long (default 60; 0: give up at once)",
        )
        p.add_argument(
            "--timeout",
            type=float,
            default=30.0,
            metavar="SECONDS",
            help="drop a connection that makes no progress for this long (default 30)",
        )

    get = commands.add_parser(
        "get",
        help="download files",
        description="Download files, verified against the server's sha256.",
    )
    server_option(get, None)
    get.add_argument("remote", nargs="+", metavar="REMOTE", help="path on the server")
    get.add_argument(
        "-o",
        "--output",
        metavar="DEST",
        help="existing directory to download into, or (with one REMOTE) the file "
        "to write (default: the current directory)",
    )
    get.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    get.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="REMOTE is a directory: mirror the whole tree into DEST/<its name>",
    )
    retry_options(get)
    get.add_argument(
        "--oneshot",
        action="store_true",
        help="speak the socket tutorial's one-shot protocol (send the name, read until the "
        f"server closes; default server {DEFAULT_ONESHOT}); nothing can be verified",
    )
    get.set_defaults(handler=run_get)

    put = commands.add_parser(
        "put",
        help="upload a file or a tree",
        description="Upload LOCAL to REMOTE (default: its own name at the root; a REMOTE "
        "ending in / is a directory to put it in). The server publishes a file only once it "
        "has arrived whole and matches its sha256. Needs a server started with --writable.",
    )
    server_option(put, DEFAULT_SERVER)
    put.add_argument("local", metavar="LOCAL", help="file (or, with -r, directory) to upload")
    put.add_argument("remote", nargs="?", metavar="REMOTE", help="path on the server")
    put.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files that exist on the server (else: refused)",
    )
    put.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="LOCAL is a directory: upload the whole tree (directories created)",
    )
    put.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    retry_options(put)
    put.set_defaults(handler=run_put)

    ls = commands.add_parser(
        "ls", help="list a remote directory", description="List a directory on the server."
    )
    server_option(ls, DEFAULT_SERVER)
    retry_options(ls)
    ls.add_argument("path", nargs="?", default="", metavar="DIR", help="directory (default: /)")
    ls.set_defaults(handler=run_ls)

    chat = commands.add_parser(
        "chat",
        help="join a chat room",
        description="Chat: lines you type go to the room, the room's lines are printed. "
        "Reconnects by itself if the server goes away. End with /quit or end of input.",
    )
    server_option(chat, DEFAULT_CHAT)
    chat.add_argument("--nick", "-n", help="your nickname (else choose one with /nick NAME)")
    chat.set_defaults(handler=run_chat)

    echo = commands.add_parser(
        "echo",
        help="send stdin to an echo server, print what comes back",
        description="Send standard input to an echo (or upper) server and print the answer.",
    )
    server_option(echo, DEFAULT_ECHO)
    echo.set_defaults(handler=run_echo)
    return parser


class _Interruption:
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


_interruption = _Interruption()
_RESUME_HINT = {
    "get": "interrupted; run the same command again to resume",
    "put": "interrupted; nothing partial is kept on the server: run the same command again",
}


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point (see :mod:`tcpfiles.__main__`, which calls it)."""
    args = build_parser().parse_args(argv)
    try:
        _check_values(args)
        planners = {"get": _plan_get, "put": _plan_put}
        args.plan = planners[args.command](args) if args.command in planners else None
        args.credentials = _credentials(args)
    except Failed as exc:
        _say(str(exc))
        sys.exit(exc.status)
    _interruption.message = _RESUME_HINT.get(args.command, "interrupted")
    try:
        task.react(_run, (args,))
    except SystemExit:
        if _interruption.signum:
            sys.exit(128 + _interruption.signum)
        raise
    raise AssertionError("unreachable: react() exits")


@defer.inlineCallbacks
def _run(reactor: Any, args: argparse.Namespace) -> Any:
    _interruption.install(reactor)
    try:
        status = yield args.handler(reactor, args)
    except Failed as exc:
        _say(str(exc))
        raise SystemExit(exc.status) from None
    raise SystemExit(status)


def _check_values(args: argparse.Namespace) -> None:
    """Usage errors that argparse's types cannot see; Failed (exit 2, one line) for each."""
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise Failed(f"--timeout {timeout:g}: give a number of seconds above 0", EXIT_USAGE)
    retry_for = getattr(args, "retry_for", None)
    if retry_for is not None and not (math.isfinite(retry_for) and retry_for >= 0):
        raise Failed(f"--retry-for {retry_for:g}: give a number of seconds, 0 or more", EXIT_USAGE)
    server = args.server  # None only for get, whose default depends on --oneshot
    if server is None:
        server = DEFAULT_ONESHOT if args.oneshot else DEFAULT_SERVER
    if args.ca and not os.access(args.ca, os.R_OK):
        raise Failed(f"--ca {args.ca!r}: cannot read it", EXIT_USAGE)
    from twisted.internet import reactor

    try:
        client_endpoint(reactor, server, ca=args.ca, insecure=args.insecure)
    except ValueError as exc:
        raise Failed(f"--server {server!r}: {exc}", EXIT_USAGE) from None
    except Exception as exc:  # noqa: BLE001 - OpenSSL's errors for a --ca that is not a PEM CA
        raise Failed(f"--ca {args.ca!r}: not a PEM certificate ({exc})", EXIT_USAGE) from None


def _server_host(server: str) -> str | None:
    """The host name in a --server value, for netrc (None for a UNIX socket)."""
    if server.startswith(("tls:", "tcp:", "tcp6:", "ssl:")):
        for part in server.split(":")[1:]:
            if part.startswith("host="):
                return part[5:]
        rest = server.split(":", 1)[1]
        return rest.rpartition(":")[0] or None
    if server.startswith("unix:"):
        return None
    if server.startswith("["):
        return server[1:].partition("]")[0]
    return server.partition(":")[0]


def _credentials(args: argparse.Namespace) -> tuple[str, str] | None:
    """(user, password) for --user, from the environment, netrc, or a prompt; never argv."""
    if not args.user:
        return None
    password = os.environ.get("TCPFILES_PASSWORD")
    if password is None and os.path.exists(args.netrc):
        import netrc

        try:
            entry = netrc.netrc(args.netrc).authenticators(
                _server_host(args.server or DEFAULT_SERVER) or ""
            )
        except (netrc.NetrcParseError, OSError) as exc:
            raise Failed(f"--netrc {args.netrc}: {exc}", EXIT_USAGE) from None
        if entry is not None and entry[0] in (args.user, "") and entry[2]:
            password = entry[2]
    if password is None and sys.stdin.isatty():
        import getpass

        try:
            password = getpass.getpass(f"password for {args.user}: ")
        except EOFError:  # Ctrl-D at the prompt
            raise Failed(f"--user {args.user}: no password given", EXIT_USAGE) from None
    if password is None:
        raise Failed(
            "--user needs a password: set TCPFILES_PASSWORD, put it in a netrc file, "
            "or run from a terminal to be asked",
            EXIT_USAGE,
        )
    return args.user, password


def _endpoint(reactor: Any, args: argparse.Namespace, server: str, default_port: int) -> Any:
    """The client endpoint for ``server`` with the command's TLS options; Failed on bad usage."""
    if args.insecure:
        _say("warning: --insecure: the server's identity is not checked")
    try:
        return client_endpoint(reactor, server, default_port, ca=args.ca, insecure=args.insecure)
    except ValueError as exc:
        raise Failed(f"--server {server!r}: {exc}", EXIT_USAGE) from None


def _connection_failed(server: str, exc: BaseException) -> Failed:
    if isinstance(exc, ValueError):
        return Failed(f"--server {server!r}: {exc}", EXIT_USAGE)
    return Failed(f"cannot connect to {server}: {_reason(exc)}", EXIT_CONNECTION)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, error.ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(exc, error.DNSLookupError):
        return "unknown host"
    if isinstance(exc, error.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _say(message: str) -> None:
    if not _interruption.signum:  # after Ctrl-C, only the one "interrupted" line
        print(f"tcpfiles: {message}", file=sys.stderr)


# --- get ----------------------------------------------------------------------------------------


def _plan_get(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(remote, local destination) pairs, or Failed for usage errors, before connecting."""
    output = args.output or "."
    into_directory = os.path.isdir(output)
    if not into_directory and len(args.remote) > 1:
        raise Failed(
            f"-o {output!r}: with several files, DEST must be an existing directory", EXIT_USAGE
        )
    if not into_directory and not args.recursive:
        parent = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(parent):
            raise Failed(f"cannot write {output}: no such directory {parent}", EXIT_LOCAL)
    pairs = []
    for remote in args.remote:
        name = remote.rstrip("/").rsplit("/", 1)[-1]
        if not name:
            raise Failed(f"{remote!r} does not name a file", EXIT_USAGE)
        pairs.append((remote, os.path.join(output, name) if into_directory else output))
    return pairs


def run_get(reactor: Any, args: argparse.Namespace) -> Any:
    """``tcpfiles get``: the files protocol, or the tutorial's one-shot one."""
    if args.oneshot:
        return _get_oneshot(reactor, args)
    return _with_session(reactor, args, lambda session: _get_files(session, args))


@defer.inlineCallbacks
def _get_oneshot(reactor: Any, args: argparse.Namespace) -> Any:
    server = args.server or DEFAULT_ONESHOT
    status = EXIT_OK
    for remote, destination in args.plan:
        try:
            yield fetch_oneshot(_endpoint(reactor, args, server, 8887), remote, destination)
        except MissingFile:
            _say(f"{remote}: the server has no such file (it answered 1)")
            status = status or EXIT_REFUSED
        except NothingReceived as exc:
            _say(f"{remote}: nothing received: {exc}; {destination} left as it was")
            status = status or EXIT_CONNECTION
        except (ValueError, error.ConnectError, error.DNSLookupError) as exc:
            raise _connection_failed(server, exc) from None
        except OSError as exc:
            _say(_local_problem(exc, destination))
            status = status or EXIT_LOCAL
    return status


@defer.inlineCallbacks
def _with_session(reactor: Any, args: argparse.Namespace, work: Any) -> Any:
    """Connect (a first failure is final), run ``work(session)``, close."""
    server = args.server or DEFAULT_SERVER
    if args.insecure:
        _say("warning: --insecure: the server's identity is not checked")
    session = Session(
        reactor,
        server,
        retry_for=args.retry_for,
        timeout=args.timeout,
        on_notice=_say,
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
        raise _connection_failed(server, exc) from None
    try:
        return (yield work(session))
    finally:
        session.close()


def _one_transfer(session: Session, name: str, quiet: bool, operation: Any) -> Any:
    """Run ``operation(client, retried, start, progress)`` with retries and a progress bar."""
    bar = _ProgressBar(name, enabled=not quiet)

    def attempt(client: FilesClient, retried: bool) -> Any:
        bar.close()  # a retry draws a fresh bar from where it resumes
        return operation(client, retried, bar.start, bar.advance)

    def done(result: Any) -> Any:
        bar.close()
        return result

    return session.run(attempt).addBoth(done)


def _refusal(what: str, exc: RemoteError) -> str:
    """A server's ERR as one line; "log in first" tells a CLI user about --user."""
    if exc.code == "unauthorized" and exc.text.startswith("log in first"):
        return f"{what}: the server has accounts: log in with --user NAME (unauthorized)"
    return f"{what}: {exc.text} ({exc.code})"


def _local_problem(exc: OSError, fallback: str) -> str:
    """One rule for local file errors: the local path, then the reason (exit status 4)."""
    path = exc.filename if isinstance(exc.filename, str) else fallback
    return f"cannot use {path}: {exc.strerror or exc}"


class _Outcome:
    """The exit status of several transfers: the first failure's kind wins."""

    def __init__(self) -> None:
        self.status = EXIT_OK

    def failed(self, what: str, exc: BaseException) -> None:
        """Report one failure; a lost connection ends the whole command."""
        if isinstance(exc, RemoteError) and exc.code == "exists":
            _say(f"{what}: already on the server (--overwrite replaces it)")
            self.status = self.status or EXIT_REFUSED
        elif isinstance(exc, RemoteError):
            _say(_refusal(what, exc))
            self.status = self.status or EXIT_REFUSED
        elif isinstance(exc, TLSFailure | WrongServer):
            raise Failed(str(exc), EXIT_CONNECTION)
        elif isinstance(exc, ConnectionClosed | error.ConnectError | error.DNSLookupError):
            _say(f"{what}: {exc}")
            raise Failed("gave up: the server stayed unreachable", EXIT_CONNECTION)
        elif isinstance(exc, IntegrityError):
            _say(f"{what}: {exc}")
            self.status = self.status or EXIT_LOCAL
        elif isinstance(exc, OSError):
            _say(_local_problem(exc, what))
            self.status = self.status or EXIT_LOCAL
        else:
            raise exc

    def tree(self, result: TreeResult) -> None:
        """Report what a tree transfer skipped or failed."""
        for skipped in result.skipped or []:
            _say(f"skipped {skipped}: not a regular file, or a name that cannot be used here")
        for what, exc in result.failed or []:
            self.failed(what, exc)


@defer.inlineCallbacks
def _get_files(session: Session, args: argparse.Namespace) -> Any:
    """Download each REMOTE (or tree); go on after a failure, and report it in the status."""
    outcome = _Outcome()

    def get_one(remote: str, destination: str) -> Any:
        return _one_transfer(
            session,
            os.path.basename(destination),
            args.quiet,
            lambda client, _retried, start, progress: fetch(
                client, remote, destination, start, progress
            ),
        )

    for remote, destination in args.plan:
        try:
            if args.recursive:
                outcome.tree((yield mirror(session, remote, destination, get_one)))
            else:
                yield get_one(remote, destination)
        except Exception as exc:  # noqa: BLE001 - sorted into exit statuses by _Outcome
            outcome.failed(remote, exc)
    return outcome.status


# --- put ----------------------------------------------------------------------------------------


def _plan_put(args: argparse.Namespace) -> tuple[str, str]:
    """(local, remote) for ``put``, or Failed for usage errors, before connecting."""
    local = args.local
    if not os.path.lexists(local):  # a local file problem (exit 4), named by its path
        raise Failed(f"cannot use {local}: No such file or directory", EXIT_LOCAL)
    if args.recursive:
        if not os.path.isdir(local):
            raise Failed(f"{local!r} is not a directory (put -r uploads a tree)", EXIT_USAGE)
    elif not os.path.isfile(local):
        raise Failed(f"{local!r} is not a file (use -r for a directory)", EXIT_USAGE)
    name = os.path.basename(os.path.abspath(local))
    remote = args.remote or name
    if remote.endswith("/"):
        remote += name
    return local, remote


def run_put(reactor: Any, args: argparse.Namespace) -> Any:
    """``tcpfiles put``."""
    return _with_session(reactor, args, lambda session: _put_files(session, args))


@defer.inlineCallbacks
def _put_files(session: Session, args: argparse.Namespace) -> Any:
    outcome = _Outcome()
    local, remote = args.plan

    @defer.inlineCallbacks
    def put_one(local: str, remote: str) -> Any:
        size, sha256 = sha256_of(local)
        yield _one_transfer(
            session,
            os.path.basename(local),
            args.quiet,
            lambda client, retried, start, progress: push(
                client, local, remote, size, sha256, args.overwrite, start, progress, retried
            ),
        )
        return size

    try:
        if args.recursive:
            outcome.tree((yield upload_tree(session, local, remote, put_one)))
        else:
            yield make_parents(session, remote)
            yield put_one(local, remote)
    except Exception as exc:  # noqa: BLE001 - sorted into exit statuses by _Outcome
        outcome.failed(local, exc)
    return outcome.status


class _ProgressBar:
    """A tqdm bar on stderr when it is a terminal (bytes, rate, ETA); silent otherwise."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name = name
        self.enabled = enabled and sys.stderr.isatty()
        self.bar: Any = None

    def start(self, total: int, already: int = 0) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=already,
                desc=self.name,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                leave=True,
            )

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# --- ls -----------------------------------------------------------------------------------------


def human_size(size: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def run_ls(reactor: Any, args: argparse.Namespace) -> Any:
    """``tcpfiles ls``."""
    return _with_session(reactor, args, lambda session: _ls(session, args))


@defer.inlineCallbacks
def _ls(session: Session, args: argparse.Namespace) -> Any:
    """Print a directory as a table, sorted by name: size, modification time (UTC), name.

    A listing the server ended early (its ``--max-list``) is printed, then a warning on stderr,
    and the exit status is 1: a script never takes it for the whole directory."""
    try:
        entries = yield session.run(lambda client, _retried: client.list(args.path))
    except RemoteError as exc:
        _say(_refusal(args.path or "/", exc))
        return EXIT_REFUSED
    except ConnectionClosed as exc:
        _say(str(exc))
        return EXIT_CONNECTION
    rows = [
        (
            "-" if e.size is None else human_size(e.size),
            e.mtime.replace("T", " ")[:16],
            e.display_name + {"d": "/", "x": "  (its name cannot be requested)"}.get(e.kind, ""),
        )
        for e in entries
    ]
    width = max((len(size) for size, _, _ in rows), default=0)
    for size, mtime, name in rows:
        print(f"{size:>{width}}  {mtime}  {name}")
    if not entries.complete:  # shown, but not the whole directory: say so, and exit 1
        incomplete = IncompleteListing(args.path, entries)
        _say(f"{incomplete.text} ({incomplete.code}); not every entry is shown")
        return EXIT_REFUSED
    return EXIT_OK


# --- chat and echo ------------------------------------------------------------------------------


def _stdio(protocol: Any) -> Any:
    from twisted.internet import stdio

    return stdio.StandardIO(protocol)


@defer.inlineCallbacks
def run_chat(reactor: Any, args: argparse.Namespace) -> Any:
    """``tcpfiles chat``: until /quit or the end of input."""
    try:
        endpoint = _endpoint(reactor, args, args.server, 9000)
    except ValueError as exc:
        raise _connection_failed(args.server, exc) from None
    session = ChatSession(reactor, endpoint, args.server, args.nick)
    session.login = args.credentials
    return (yield session.start(_stdio))


@defer.inlineCallbacks
def run_echo(reactor: Any, args: argparse.Namespace) -> Any:
    """``tcpfiles echo``: stdin to the server, the answer to stdout."""
    try:
        yield run_echo_client(_endpoint(reactor, args, args.server, 7777), _stdio)
    except Exception as exc:
        raise _connection_failed(args.server, exc) from None
    return EXIT_OK
