#!/usr/bin/env python3
"""Server CPU per small GET, two or more checkouts alternated (robust on a busy machine).

    python bench/cpu_per_request.py before=/path/to/old/checkout after=. --rounds 5

Each LABEL=DIR is a source tree of tcpfiles run by this environment's twistd with
``PYTHONPATH=DIR`` (its own code, this venv's Twisted).  Per round and mode, each tree in turn
(the order reversed every other round): a fresh ``twistd -n tcpfiles`` pinned to the second
CPU, 200 warm-up GETs, then ``--requests`` GETs of a 64 KiB file by bench/many.py's driver
(100 clients, one per connection or persistent); the server's user + system CPU over the run
(/proc/PID/stat), divided by the requests.  Prints each run, then the median and range.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from common import CPUS, cpu_seconds, pin, stop
from many import NAME, Kind, load, start, tcpfiles_command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", metavar="LABEL=DIR")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    trees = [tuple(tree.split("=", 1)) for tree in args.trees]
    pin(CPUS[0])()
    kind = Kind("tcpfiles", False, tcpfiles_command)
    seen: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="tcpfiles-cpu-") as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        (root / NAME).write_bytes(os.urandom(64 * 1024))
        for number in range(args.rounds):
            order = trees if number % 2 == 0 else trees[::-1]
            for mode in ("one per connection", "persistent"):
                for label, directory in order:
                    os.environ["PYTHONPATH"] = str(Path(directory).resolve())
                    proc, port = start(kind, root)
                    try:
                        load(False, port, 10, 200, True, 64 * 1024)
                        before = cpu_seconds(proc.pid)
                        load(
                            False,
                            port,
                            args.clients,
                            args.requests,
                            mode == "persistent",
                            64 * 1024,
                        )
                        used = cpu_seconds(proc.pid) - before
                    finally:
                        stop(proc)
                    us = used / args.requests * 1e6
                    seen.setdefault((label, mode), []).append(us)
                    print(f"  round {number + 1}: {label:<10} {mode:<19} {us:6.1f} µs", flush=True)
    print(f"\nserver CPU per GET of 64 KiB, median of {args.rounds} (range)")
    for (label, mode), values in sorted(seen.items(), key=lambda item: item[0][::-1]):
        print(
            f"{label:<10} {mode:<19} {statistics.median(values):6.1f} µs "
            f"({min(values):.0f}-{max(values):.0f})"
        )


if __name__ == "__main__":
    main()
