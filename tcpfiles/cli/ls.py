"""``tcpfiles ls``: a remote directory as a table, thin over :meth:`FilesClient.list`."""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet import defer

from tcpfiles.cli.common import (
    DEFAULT_SERVER,
    EXIT_CONNECTION,
    EXIT_OK,
    EXIT_REFUSED,
    refusal,
    say,
)
from tcpfiles.cli.options import add_retry_options, add_server_options
from tcpfiles.cli.session import with_session
from tcpfiles.files.client import ConnectionClosed, EntryKind, IncompleteListing, RemoteError
from tcpfiles.files.transfer import Session

#: What follows a name in the table: a slash for a directory, a note for a name no request
#: can carry.
_SUFFIX = {EntryKind.DIR: "/", EntryKind.UNREQUESTABLE: "  (its name cannot be requested)"}


def add_commands(commands: Any) -> None:
    """``ls``, with its options."""
    ls = commands.add_parser(
        "ls", help="list a remote directory", description="List a directory on the server."
    )
    add_server_options(ls, DEFAULT_SERVER)
    add_retry_options(ls)
    ls.add_argument("path", nargs="?", default="", metavar="DIR", help="directory (default: /)")
    ls.set_defaults(handler=run_ls)


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
    return with_session(reactor, args, lambda session: list_directory(session, args))


@defer.inlineCallbacks
def list_directory(session: Session, args: argparse.Namespace) -> Any:
    """Print a directory as a table, sorted by name: size, modification time (UTC), name.

    A listing the server ended early (its ``--max-list``) is printed, then a warning on stderr,
    and the exit status is 1: a script never takes it for the whole directory."""
    try:
        entries = yield session.run(lambda client, _retried: client.list(args.path))
    except RemoteError as exc:
        say(refusal(args.path or "/", exc))
        return EXIT_REFUSED
    except ConnectionClosed as exc:
        say(str(exc))
        return EXIT_CONNECTION
    rows = [
        (
            "-" if e.size is None else human_size(e.size),
            e.mtime.replace("T", " ")[:16],
            e.display_name + _SUFFIX.get(e.kind, ""),
        )
        for e in entries
    ]
    width = max((len(size) for size, _, _ in rows), default=0)
    for size, mtime, name in rows:
        print(f"{size:>{width}}  {mtime}  {name}")
    if not entries.complete:  # shown, but not the whole directory: say so, and exit 1
        incomplete = IncompleteListing(args.path, entries)
        say(f"{incomplete.text} ({incomplete.code}); not every entry is shown")
        return EXIT_REFUSED
    return EXIT_OK
