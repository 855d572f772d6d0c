"""The ``tcpfiles`` command: a thin layer over :mod:`tcpfiles.files.client`.

Exit status: 0 success; 1 the server refused a request (``ERR``); 2 bad usage; 3 could not
connect, or the connection was lost; 4 a local file problem, or what arrived failed its checks.

One module per command family (:mod:`.files` get and put, :mod:`.ls`, :mod:`.oneshot`,
:mod:`.chat`, :mod:`.echo`) over what they share (:mod:`.common`, :mod:`.options`,
:mod:`.session`, :mod:`.progress`); this module parses the arguments and runs the command.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.internet import defer, task

from tcpfiles import __version__
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
from tcpfiles.cli.files import plan_get, plan_put, run_get, run_put
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


_RESUME_HINT = {
    "get": "interrupted; run the same command again to resume",
    "put": "interrupted; nothing partial is kept on the server: run the same command again",
}


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point (see :mod:`tcpfiles.__main__`, which calls it)."""
    args = build_parser().parse_args(argv)
    try:
        check_values(args)
        planners = {"get": plan_get, "put": plan_put}
        args.plan = planners[args.command](args) if args.command in planners else None
        args.credentials = credentials(args)
    except Failed as exc:
        say(str(exc))
        sys.exit(exc.status)
    interruption.message = _RESUME_HINT.get(args.command, "interrupted")
    try:
        task.react(_run, (args,))
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
