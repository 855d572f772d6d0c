"""``tcpfiles get`` and ``tcpfiles put``, plain or recursive: thin over
:mod:`tcpfiles.files.transfer`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from twisted.internet import defer

from tcpfiles.cli.common import DEFAULT_ONESHOT, DEFAULT_SERVER, EXIT_LOCAL, EXIT_USAGE, Failed
from tcpfiles.cli.oneshot import get_oneshot
from tcpfiles.cli.options import add_retry_options, add_server_options
from tcpfiles.cli.session import Outcome, one_transfer, with_session
from tcpfiles.files.transfer import (
    Session,
    digest_of,
    fetch,
    make_parents,
    mirror,
    push,
    upload_tree,
)


def add_commands(commands: Any) -> None:
    """``get`` and ``put``, with their options."""
    _add_get(commands)
    _add_put(commands)


def _add_get(commands: Any) -> None:
    """``get``: files, trees (-r), or the tutorial's one-shot protocol (--oneshot)."""
    get = commands.add_parser(
        "get",
        help="download files",
        description="Download files, verified against the server's sha256.",
    )
    add_server_options(get, None)
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
    add_retry_options(get)
    get.add_argument(
        "--oneshot",
        action="store_true",
        help="speak the socket tutorial's one-shot protocol (send the name, read until the "
        f"server closes; default server {DEFAULT_ONESHOT}); nothing can be verified",
    )
    get.set_defaults(
        handler=run_get,
        planner=plan_get,
        interrupted="interrupted; run the same command again to resume",
    )


def _add_put(commands: Any) -> None:
    """``put``: a file, or a tree (-r)."""
    put = commands.add_parser(
        "put",
        help="upload a file or a tree",
        description="Upload LOCAL to REMOTE (default: its own name at the root; a REMOTE "
        "ending in / is a directory to put it in). The server publishes a file only once it "
        "has arrived whole and matches its sha256. Needs a server started with --writable.",
    )
    add_server_options(put, DEFAULT_SERVER)
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
    add_retry_options(put)
    put.set_defaults(
        handler=run_put,
        planner=plan_put,
        interrupted="interrupted; nothing partial is kept on the server: "
        "run the same command again",
    )


# --- get ----------------------------------------------------------------------------------------


def plan_get(args: argparse.Namespace) -> list[tuple[str, str]]:
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
        return get_oneshot(reactor, args)
    return with_session(reactor, args, lambda session: _get_files(session, args))


@defer.inlineCallbacks
def _get_files(session: Session, args: argparse.Namespace) -> Any:
    """Download each REMOTE (or tree); go on after a failure, and report it in the status."""
    outcome = Outcome()

    def get_one(remote: str, destination: str) -> Any:
        return one_transfer(
            session,
            os.path.basename(destination),
            args.quiet,
            lambda client, _retried, start, progress: fetch(
                client, remote, destination, on_start=start, on_received=progress
            ),
        )

    for remote, destination in args.plan:
        try:
            if args.recursive:
                outcome.tree((yield mirror(session, remote, destination, get_one)))
            else:
                yield get_one(remote, destination)
        except Exception as exc:  # noqa: BLE001 - sorted into exit statuses by Outcome
            outcome.failed(remote, exc)
    return outcome.status


# --- put ----------------------------------------------------------------------------------------


def plan_put(args: argparse.Namespace) -> tuple[str, str]:
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
    return with_session(reactor, args, lambda session: _put_files(session, args))


@defer.inlineCallbacks
def _put_files(session: Session, args: argparse.Namespace) -> Any:
    outcome = Outcome()
    local, remote = args.plan

    @defer.inlineCallbacks
    def put_one(local: str, remote: str) -> Any:
        size, sha256 = yield digest_of(local, session.reactor)  # once, for every attempt
        yield one_transfer(
            session,
            os.path.basename(local),
            args.quiet,
            lambda client, retried, start, progress: push(
                client,
                local,
                remote,
                size,
                sha256,
                args.overwrite,
                on_start=start,
                retried=retried,
                on_sent=progress,
            ),
        )
        return size

    try:
        if args.recursive:
            outcome.tree((yield upload_tree(session, local, remote, put_one)))
        else:
            yield make_parents(session, remote)
            yield put_one(local, remote)
    except Exception as exc:  # noqa: BLE001 - sorted into exit statuses by Outcome
        outcome.failed(local, exc)
    return outcome.status
