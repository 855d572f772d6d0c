#!/usr/bin/env python3
"""Many clients at once, and many idle connections.

    python bench/many.py                     # 100 clients, 5000 requests of a 64 KiB file, 3 rounds
    python bench/many.py --idle 1000         # also: the RSS cost of 1000 idle connections

Servers: tcpfiles (files protocol) and twistd web (HTTP/1.1), each fresh per measurement on
127.0.0.1 only, pinned to one CPU with the driver on the other; the per-address limit of
tcpfiles is lifted (all the load comes from one address).  The driver (an epoll loop) speaks both
protocols; in "one per connection" every request opens its own connection, in "persistent" each
of the clients keeps one.  Printed per mode: requests/s, p50/p99/max latency (a request that
waited for a SYN retry would take a second or more), and tcpfiles' ratio.  Bounded in count
and time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CPUS, free_port, pin, rss_mib, start_server, stop, twistd

NAME = "small.bin"
TIME_LIMIT = 120.0


def command(kind: str, root: Path, port: int) -> list[str]:
    if kind == "tcpfiles":
        return twistd(
            "tcpfiles",
            "--root",
            str(root),
            "--max-per-peer",
            "5000",
            "--max-connections",
            "5000",
            port=port,
        )
    return twistd("web", "--path", str(root), port=port)


class Slot:
    """One client of the driver: at most one request in flight."""

    __slots__ = ("sock", "started", "head", "left", "sent")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.started = 0.0
        self.head = b""
        self.left = -1  # body bytes still to come; -1 while reading the head
        self.sent = False


def load(
    kind: str, port: int, clients: int, requests: int, persistent: bool, size: int
) -> tuple[list[float], float]:
    """Run the load; every request's latency, and the wall time of the whole run.

    A bare epoll loop over non-blocking sockets, reading into one reused buffer: the driver
    must cost far less per request than the servers it measures, or the ratio measures the
    driver (an asyncio-streams driver gave 1.43-1.88x where this one gives more).
    """
    request = (
        f"GET {NAME}\n"
        if kind == "tcpfiles"
        else f"GET /{NAME} HTTP/1.1\r\nHost: localhost\r\n\r\n"
    ).encode()
    marker = b"\n" if kind == "tcpfiles" else b"\r\n\r\n"
    expected = f"OK {size}".encode()
    buffer = bytearray(1 << 18)
    view = memoryview(buffer)
    poll = select.epoll()
    by_fd: dict[int, Slot] = {}
    latencies: list[float] = []
    to_start = requests
    perf = time.perf_counter

    def begin(slot: Slot) -> None:
        nonlocal to_start
        to_start -= 1
        slot.started = perf()
        slot.head, slot.left = b"", -1
        if slot.sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            slot.sock, slot.sent = sock, False
            by_fd[sock.fileno()] = slot
            poll.register(sock.fileno(), select.EPOLLOUT)
        else:
            slot.sock.send(request)

    def finish(slot: Slot) -> None:
        latencies.append(perf() - slot.started)
        if not persistent and slot.sock is not None:
            del by_fd[slot.sock.fileno()]
            poll.unregister(slot.sock.fileno())
            slot.sock.close()
            slot.sock = None
        if to_start > 0:
            begin(slot)

    started = perf()
    deadline = started + TIME_LIMIT
    slots = [Slot() for _ in range(min(clients, requests))]
    for slot in slots:
        begin(slot)
    try:
        while len(latencies) < requests:
            if perf() > deadline:
                raise TimeoutError(f"{len(latencies)} of {requests} requests in {TIME_LIMIT} s")
            for fd, _events in poll.poll(1.0):
                slot = by_fd[fd]
                sock = slot.sock
                assert sock is not None
                if not slot.sent:  # connected (or failed): send the request, then read
                    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:
                        raise ConnectionError(f"connect: {os.strerror(error)}")
                    sock.send(request)
                    slot.sent = True
                    poll.modify(fd, select.EPOLLIN)
                    continue
                n = sock.recv_into(buffer)
                if n == 0:
                    raise ConnectionError("the server closed a connection early")
                if slot.left < 0:
                    if slot.head:  # the head came in pieces (rare): search all of it
                        data = slot.head + bytes(view[:n])
                        end = data.find(marker)
                        if end < 0:
                            slot.head = data
                            continue
                        head, got = data[:end], len(data) - end - len(marker)
                    else:
                        end = buffer.find(marker, 0, n)
                        if end < 0:
                            slot.head = bytes(view[:n])
                            continue
                        head, got = bytes(view[:end]), n - end - len(marker)
                    ok = head == expected if kind == "tcpfiles" else b" 200 " in head[:20]
                    if not ok:
                        raise RuntimeError(f"bad answer {head[:80]!r}")
                    slot.left = size - got
                else:
                    slot.left -= n
                if slot.left == 0:
                    finish(slot)
                elif slot.left < 0:
                    raise RuntimeError("more bytes than the answer should have")
    finally:
        for slot in slots:
            if slot.sock is not None:
                slot.sock.close()
        poll.close()
    return latencies, perf() - started


async def idle_connections(port: int, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STAT /\n")
        await reader.readuntil(b"\n")  # accepted and answered: now it sits idle
        writers.append(writer)
    return writers


def start(kind: str, root: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    return start_server(command(kind, root, port), root.parent, port), port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=int, default=1000, help="idle connections (0: skip)")
    args = parser.parse_args()
    pin(CPUS[0])()
    results: dict[tuple[str, str], list[list[float]]] = {}
    rates_seen: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="tcpfiles-many-") as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        (root / NAME).write_bytes(os.urandom(args.size))
        for round_number in range(args.rounds):
            kinds = ["tcpfiles", "twistd web"][:: 1 if round_number % 2 == 0 else -1]
            for mode in ("one per connection", "persistent"):
                for kind in kinds:
                    proc, port = start(kind, root)
                    try:
                        latencies, wall = load(
                            kind,
                            port,
                            args.clients,
                            args.requests,
                            mode == "persistent",
                            args.size,
                        )
                    finally:
                        stop(proc)
                    results.setdefault((kind, mode), []).append(latencies)
                    rates_seen.setdefault((kind, mode), []).append(len(latencies) / wall)
                    print(
                        f"  round {round_number + 1}: {kind:<10} {mode:<19} "
                        f"{len(latencies) / wall:8.0f} requests/s, p99 "
                        f"{sorted(latencies)[int(len(latencies) * 0.99)] * 1e3:.1f} ms",
                        flush=True,
                    )
        rates = {}
        print(
            f"\n{args.clients} clients, {args.requests} requests of {args.size} B per "
            f"measurement; median of {args.rounds}; {len(CPUS)} CPUs, "
            f"Python {sys.version.split()[0]}"
        )
        print(
            f"{'server':<11} {'mode':<19} {'requests/s':>11} {'tcpfiles ×':>11} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
        )
        for key, seen in rates_seen.items():
            rates[key] = statistics.median(seen)
        for (kind, mode), runs in results.items():
            merged = sorted(x for run in runs for x in run)
            mine = rates[("tcpfiles", mode)]
            print(
                f"{kind:<11} {mode:<19} {rates[(kind, mode)]:11.0f} "
                f"{mine / rates[(kind, mode)]:11.2f} {merged[len(merged) // 2] * 1e3:7.1f} "
                f"{merged[int(len(merged) * 0.99)] * 1e3:7.1f} {merged[-1] * 1e3:7.1f}"
            )
        if args.idle:
            proc, port = start("tcpfiles", root)
            try:
                before = rss_mib(proc.pid)

                async def hold() -> float:
                    writers = await idle_connections(port, args.idle)
                    grown = rss_mib(proc.pid) - before
                    for writer in writers:
                        writer.close()
                    return grown

                grown = asyncio.run(hold())
            finally:
                stop(proc)
            print(
                f"\n{args.idle} idle connections: tcpfiles RSS +{grown:.1f} MiB "
                f"({grown * 1024 / args.idle:.1f} KiB each)"
            )


if __name__ == "__main__":
    main()
