"""The options every command shares (server, TLS, login; retries and timeouts for the files
commands), and their checks before anything connects."""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

from tcpfiles.cli.common import (
    DEFAULT_ONESHOT,
    DEFAULT_SERVER,
    EXIT_USAGE,
    Failed,
    say,
)
from tcpfiles.files.client import client_endpoint


def add_server_options(p: argparse.ArgumentParser, default: str | None) -> None:
    """--server, --ca, --user, --netrc and --insecure, for every command."""
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


def add_retry_options(p: argparse.ArgumentParser) -> None:
    """--retry-for and --timeout, for the files commands."""
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


def check_values(reactor: Any, args: argparse.Namespace) -> None:
    """Usage errors that argparse's types cannot see; Failed (exit 2, one line) for each.

    The server is checked by making (not connecting) its endpoint with ``reactor``."""
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
    try:
        client_endpoint(reactor, server, ca=args.ca, insecure=args.insecure)
    except ValueError as exc:
        raise Failed(f"--server {server!r}: {exc}", EXIT_USAGE) from None
    except Exception as exc:  # noqa: BLE001 - OpenSSL's errors for a --ca that is not a PEM CA
        raise Failed(f"--ca {args.ca!r}: not a PEM certificate ({exc})", EXIT_USAGE) from None


def server_host(server: str) -> str | None:
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


def credentials(args: argparse.Namespace) -> tuple[str, str] | None:
    """(user, password) for --user, from the environment, netrc, or a prompt; never argv."""
    if not args.user:
        return None
    password = os.environ.get("TCPFILES_PASSWORD")
    if password is None and os.path.exists(args.netrc):
        import netrc

        try:
            entry = netrc.netrc(args.netrc).authenticators(
                server_host(args.server or DEFAULT_SERVER) or ""
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


def endpoint_for(reactor: Any, args: argparse.Namespace, server: str, default_port: int) -> Any:
    """The client endpoint for ``server`` with the command's TLS options; Failed on bad usage."""
    warn_if_insecure(args)
    try:
        return client_endpoint(reactor, server, default_port, ca=args.ca, insecure=args.insecure)
    except ValueError as exc:
        raise Failed(f"--server {server!r}: {exc}", EXIT_USAGE) from None


def warn_if_insecure(args: argparse.Namespace) -> None:
    """One line on stderr before connecting with --insecure."""
    if args.insecure:
        say("warning: --insecure: the server's identity is not checked")
