"""The ``tcpfiles`` command: a thin layer over :mod:`tcpfiles.files.client`.

Exit status: 0 success; 1 the server refused a request (``ERR``); 2 bad usage; 3 could not
connect, or the connection was lost; 4 a local file problem, or what arrived failed its checks.

One module per command family (:mod:`.files` get and put, :mod:`.ls`, :mod:`.oneshot`,
:mod:`.chat`, :mod:`.echo`) over what they share (:mod:`.common`, :mod:`.options`,
:mod:`.session`, :mod:`.progress`); this module parses the arguments and runs the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.internet import defer, task

from tcpfiles import __version__
from tcpfiles.cli import chat, echo, files, ls, status
from tcpfiles.cli.chat import run_chat
from tcpfiles.cli.common import (
    DEFAULT_CHAT,
    DEFAULT_ECHO,
    DEFAULT_ONESHOT,
    DEFAULT_SERVER,
    EXIT_CONNECTION,
    EXIT_LOCAL,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    Failed,
    interruption,
    say,
)
from tcpfiles.cli.echo import run_echo
from tcpfiles.cli.files import run_get, run_put
from tcpfiles.cli.ls import human_size, run_ls
from tcpfiles.cli.options import check_values, credentials

__all__ = [
    "DEFAULT_CHAT",
    "DEFAULT_ECHO",
    "DEFAULT_ONESHOT",
    "DEFAULT_SERVER",
    "EXIT_CONNECTION",
    "EXIT_LOCAL",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "Failed",
    "build_parser",
    "human_size",
    "main",
    "run_chat",
    "run_echo",
    "run_get",
    "run_ls",
    "run_put",
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (each command family adds its own)."""
    parser = argparse.ArgumentParser(
        prog="tcpfiles",
        description="Talk to a tcpfiles server.",
        epilog="Exit status: 0 ok, 1 refused by the server, 2 usage, 3 connection, "
        "4 local file or integrity check.",
    )
    parser.add_argument("--version", action="version", version=f"tcpfiles {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in (files, ls, chat, echo, status):  # in this order in --help
        family.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point (see :mod:`tcpfiles.__main__`, which calls it): the one place of the command
    that takes the global reactor, for the checks and for :func:`task.react`."""
    args = build_parser().parse_args(argv)
    from twisted.internet import reactor

    try:
        check_values(reactor, args)
        planner = getattr(args, "planner", None)  # get and put check their files first
        args.plan = planner(args) if planner else None
        args.credentials = credentials(args)
    except Failed as exc:
        say(str(exc))
        sys.exit(exc.status)
    interruption.message = getattr(args, "interrupted", "interrupted")
    try:
        task.react(_run, (args,))  # the same global reactor
    except SystemExit:
        if interruption.signum:
            sys.exit(128 + interruption.signum)
        raise
    raise AssertionError("unreachable: react() exits")


@defer.inlineCallbacks
def _run(reactor: Any, args: argparse.Namespace) -> Any:
    interruption.install(reactor)
    try:
        status = yield args.handler(reactor, args)
    except Failed as exc:
        say(str(exc))
        raise SystemExit(exc.status) from None
    raise SystemExit(status)
