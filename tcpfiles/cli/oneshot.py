"""``tcpfiles get --oneshot``: the socket tutorial's one-shot protocol, thin over
:mod:`tcpfiles.oneshot.client`."""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet import defer, error

from tcpfiles.cli.common import (
    DEFAULT_ONESHOT,
    EXIT_CONNECTION,
    EXIT_LOCAL,
    EXIT_OK,
    EXIT_REFUSED,
    connection_failed,
    local_problem,
    say,
)
from tcpfiles.cli.options import endpoint_for
from tcpfiles.oneshot.client import MissingFile, NothingReceived, fetch_oneshot


@defer.inlineCallbacks
def get_oneshot(reactor: Any, args: argparse.Namespace) -> Any:
    server = args.server or DEFAULT_ONESHOT
    status = EXIT_OK
    for remote, destination in args.plan:
        try:
            yield fetch_oneshot(endpoint_for(reactor, args, server, 8887), remote, destination)
        except MissingFile:
            say(f"{remote}: the server has no such file (it answered 1)")
            status = status or EXIT_REFUSED
        except NothingReceived as exc:
            say(f"{remote}: nothing received: {exc}; {destination} left as it was")
            status = status or EXIT_CONNECTION
        except (ValueError, error.ConnectError, error.DNSLookupError) as exc:
            raise connection_failed(server, exc) from None
        except OSError as exc:
            say(local_problem(exc, destination))
            status = status or EXIT_LOCAL
    return status
