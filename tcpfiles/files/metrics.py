"""The files server's per-request metrics: requests by verb and outcome, bytes, durations.

Recorded by direct call, once per request, from the one place that logs it
(:meth:`~tcpfiles.files.protocol.FileServerProtocol.log_outcome`), with the same fields as the
log event.  Only when metrics are on: otherwise the factory's ``record_request`` is None and
the request loop pays one attribute test.  (An observer of the log events would have touched no
protocol code, but it would miss the bad requests a connection no longer logs, see
``BAD_REQUESTS_LOGGED``, see every server of an embedding process at once, and break whenever
the log line changes.)
"""

from __future__ import annotations

from typing import Any

from tcpfiles.core.metrics import Metrics

__all__ = ["TRANSFER_BUCKETS", "VERBS", "RequestMetrics"]

#: The verbs counted by name; anything else a client sends counts as ``other`` (a bounded set of
#: label values whatever arrives).
VERBS = frozenset(
    {"GET", "RESUME", "LIST", "STAT", "PUT", "REPLACE", "MKDIR", "LOGIN", "HELP", "QUIT"}
)
#: Verbs whose answer is a file's body (their duration is a transfer's).
_DOWNLOADS = frozenset({"GET", "RESUME"})
#: Verbs whose request carries a body in: their bytes count as received.
_UPLOADS = frozenset({"PUT", "REPLACE"})
#: Upper bounds, in seconds, of the transfer duration histogram's buckets.
TRANSFER_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class RequestMetrics:
    """Call it with one request's (request line as logged, outcome, nbytes, seconds)."""

    def __init__(self, metrics: Metrics) -> None:
        self._requests = metrics.counter(
            "tcpfiles_files_requests_total",
            "Requests answered, by verb and outcome (OK, ERR <code>, aborted: <why>).",
            ("verb", "outcome"),
        )
        bytes_total = metrics.counter(
            "tcpfiles_files_bytes_total",
            "Bytes of answers and file bodies sent (out) and of upload bodies received (in).",
            ("direction",),
        )
        self._out, self._in = bytes_total.labels("out"), bytes_total.labels("in")
        durations = metrics.histogram(
            "tcpfiles_files_transfer_seconds",
            "Seconds from request to last byte of the transfers that succeeded, by verb.",
            ("verb",),
            TRANSFER_BUCKETS,
        )
        self._durations = {verb: durations.labels(verb) for verb in _DOWNLOADS | _UPLOADS}
        self._children: dict[tuple[str, str], Any] = {}

    def __call__(self, request: str, outcome: str, nbytes: int, seconds: float) -> None:
        verb = request.partition(" ")[0].upper()
        if verb not in VERBS:
            verb = "other"
        if outcome.endswith(" entries"):  # a LIST cut short: no series per count of entries
            outcome = outcome.rpartition(" at ")[0]
        key = (verb, outcome)
        child = self._children.get(key)
        if child is None:  # verbs x outcomes: a few dozen at most
            child = self._children[key] = self._requests.labels(verb, outcome)
        child.inc()
        body_in = verb in _UPLOADS and not outcome.startswith("ERR")
        (self._in if body_in else self._out).inc(nbytes)
        if outcome == "OK" and verb in self._durations:
            self._durations[verb].observe(seconds)
