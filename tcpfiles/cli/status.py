"""``tcpfiles status``: what a server is doing now, from its ``--metrics`` endpoint's ``/status``.

Connections per behaviour, each transfer in flight (peer, request, bytes so far, rate), uploads
in flight, chat users, files being hashed: :func:`tcpfiles.status.format_status`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from twisted.internet import defer
from twisted.web.client import Agent, readBody

from tcpfiles.cli.common import EXIT_CONNECTION, EXIT_OK, Failed, reason
from tcpfiles.status import format_status

#: Where ``tcpfiles status`` asks when not told: the operations guide's ``--metrics`` example.
DEFAULT_METRICS = "127.0.0.1:9100"


def add_commands(commands: Any) -> None:
    """``status``, with its options."""
    status = commands.add_parser(
        "status",
        help="show what a server is doing now (from its --metrics endpoint)",
        description="Show a server's connections per behaviour, its transfers in flight with "
        "their rates, uploads in flight and chat users, from the /status page of the endpoint "
        "twistd tcpfiles --metrics serves.",
    )
    status.add_argument(
        "metrics",
        nargs="?",
        default=DEFAULT_METRICS,
        metavar="HOST:PORT",
        help=f"the server's --metrics endpoint, or its URL [default: {DEFAULT_METRICS}]",
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    # what the checks every command goes through look at (nothing to check or log in here)
    status.set_defaults(
        handler=run_status, server=DEFAULT_METRICS, ca=None, insecure=False, user=None
    )


def status_url(where: str) -> str:
    """``http://HOST:PORT/status`` for ``HOST:PORT``, a bare port, or a URL."""
    if "://" in where:
        return where if where.rstrip("/").endswith("/status") else where.rstrip("/") + "/status"
    if where.isdigit():
        where = f"127.0.0.1:{where}"
    return f"http://{where}/status"


@defer.inlineCallbacks
def run_status(reactor: Any, args: argparse.Namespace) -> Any:
    """``tcpfiles status``: fetch ``/status``, print it."""
    url = status_url(args.metrics)
    try:
        response = yield Agent(reactor).request(b"GET", url.encode("ascii"))
        body = yield readBody(response)
    except Exception as exc:
        raise Failed(f"cannot read {url}: {reason(exc)}", EXIT_CONNECTION) from None
    if response.code != 200:
        raise Failed(f"{url}: HTTP {response.code}", EXIT_CONNECTION)
    status = json.loads(body)
    print(
        json.dumps(status, indent=1) if args.json else format_status(status),
        end="\n" if args.json else "",
    )
    return EXIT_OK
