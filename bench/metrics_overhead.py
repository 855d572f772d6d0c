#!/usr/bin/env python3
"""What --metrics costs a request: CPU per small GET in an in-process loop, metrics off vs on.

    python bench/metrics_overhead.py [--requests N] [--rounds R]

A files server factory (the testing kit's, jobs inline) answers pipelined ``GET small`` (11
bytes) on an in-memory transport, N requests a round; rounds alternate metrics off
(``record_request`` None: what a server without --metrics runs) and on (a
:class:`~tcpfiles.files.metrics.RequestMetrics` over a Prometheus registry), and the process CPU
time per request is printed for each, with the median of the rounds and the difference.  The
log events go to twisted.logger's global publisher with no observer, as in a process whose
observers filter them: the figure is the server's own work, not the log's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tcpfiles.files.metrics import RequestMetrics  # noqa: E402
from tcpfiles.prometheus import PrometheusMetrics  # noqa: E402
from tcpfiles.testing import connect, files_factory  # noqa: E402


def round_of(factory: object, requests: int) -> float:
    """CPU seconds per request for ``requests`` pipelined GETs on one connection."""
    protocol, transport = connect(factory)  # type: ignore[arg-type]
    clock = factory.clock  # type: ignore[attr-defined]
    batch = b"GET small\n" * 100
    start = time.process_time()
    for _ in range(requests // 100):
        protocol.dataReceived(batch)
        for _turn in range(100):  # REQUESTS_PER_TURN: the rest waits for the next turn
            if not clock.getDelayedCalls():
                break
            clock.advance(0)
        answered = transport.value().count(b"OK 11\n")
        transport.clear()
    cpu = time.process_time() - start
    assert answered == 100, answered
    protocol.connectionLost(None)
    return cpu / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--only",
        choices=("off", "on"),
        help="one round of one kind, nothing printed: for valgrind --tool=callgrind, run with "
        "two --requests counts and take the difference (start-up cancels out)",
    )
    args = parser.parse_args()
    if args.only:
        with tempfile.TemporaryDirectory() as root:
            (Path(root) / "small").write_bytes(b"hello world")
            factory = files_factory(root)
            if args.only == "on":
                factory.record_request = RequestMetrics(PrometheusMetrics())
            round_of(factory, args.requests)
        return
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "small").write_bytes(b"hello world")
        factory = files_factory(root)
        recorder = RequestMetrics(PrometheusMetrics())
        off: list[float] = []
        on: list[float] = []
        round_of(factory, 2000)  # warm up
        for _ in range(args.rounds):
            factory.record_request = None
            off.append(round_of(factory, args.requests))
            factory.record_request = recorder
            on.append(round_of(factory, args.requests))
    for name, figures in (("off", off), ("on", on)):
        shown = " ".join(f"{f * 1e6:.2f}" for f in figures)
        print(f"metrics {name}: {statistics.median(figures) * 1e6:.2f} us/request ({shown})")
    extra = statistics.median(on) - statistics.median(off)
    share = extra / statistics.median(off)
    print(f"difference: {extra * 1e6:+.2f} us/request ({share:+.1%})")


if __name__ == "__main__":
    main()
