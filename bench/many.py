"""Many clients at once, and many idle connections.

    python bench/many.py                     # 100 clients, 5000 requests of a 64 KiB file, 5 rounds
    python bench/many.py --idle 1000         # also: the RSS cost of 1000 idle connections
    python bench/many.py --workers 2         # also: tcpfiles --workers 2 against nginx with 2

Servers: tcpfiles (files protocol), twistd web (HTTP/1.1) and, when installed
(/usr/sbin/nginx), nginx with one worker (HTTP/1.1, sendfile, its own temporary config), each
fresh per measurement on 127.0.0.1 only, pinned to one CPU with the driver on the other; the
per-address limit of tcpfiles is lifted (all the load comes from one address).  With
``--workers N`` (N > 1), tcpfiles is also run with ``--workers N`` and nginx with N worker
processes, both unpinned (the driver stays on its CPU); a tcpfiles that refuses the option is
reported as such and left out.  The driver (an epoll loop) speaks both protocols with the same
pattern: one request, whose answer is the same 64 KiB body, at a time per client; in "one per
connection" every request opens its own connection, in "persistent" each of the clients keeps
one.  Printed per round and mode: requests/s, the server's CPU per request (its processes'
user + system time over the run), p99; then medians, the ratio tcpfiles/other of the medians
and of each round (same round: the machine's drift cancels), p50/p99/max latency (a request
that waited for a SYN retry would take a second or more).  Bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import (
    CPUS,
    ServerExited,
    cpu_seconds,
    free_port,
    nginx_binary,
    nginx_command,
    pin,
    rss_mib,
    start_server,
    stop,
    twistd,
)

NAME = "small.bin"
TIME_LIMIT = 120.0
MODES = ("one per connection", "persistent")


def tcpfiles_command(root: Path, port: int, workers: int = 1) -> list[str]:
    extra = ["--workers", str(workers)] if workers > 1 else []
    return twistd(
        "tcpfiles",
        "--root",
        str(root),
        "--max-per-peer",
        "5000",
        "--max-connections",
        "5000",
        *extra,
        port=port,
    )


@dataclass(frozen=True)
class Kind:
    """A server under test: how to start it, which protocol it speaks, how many processes."""

    label: str
    http: bool
    command: Callable[[Path, int], list[str]]
    workers: int = 1


def kinds(workers: int) -> list[Kind]:
    """tcpfiles, twistd web, nginx (if installed); with ``workers`` > 1, tcpfiles and nginx
    with that many processes too."""
    found = [
        Kind("tcpfiles", False, tcpfiles_command),
        Kind("twistd web", True, lambda root, port: twistd("web", "--path", str(root), port=port)),
    ]
    if nginx_binary():
        found.append(Kind("nginx", True, nginx_command))
    else:
        print("nginx not found (/usr/sbin/nginx): apt-get install nginx-light to measure it too")
    if workers > 1:
        found.append(
            Kind(
                f"tcpfiles x{workers}",
                False,
                lambda root, port: tcpfiles_command(root, port, workers),
                workers,
            )
        )
        if nginx_binary():
            found.append(
                Kind(
                    f"nginx x{workers}",
                    True,
                    lambda root, port: nginx_command(root, port, workers),
                    workers,
                )
            )
    return found


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
    http: bool, port: int, clients: int, requests: int, persistent: bool, size: int
) -> tuple[list[float], float]:
    """Run the load; every request's latency, and the wall time of the whole run.

    A bare epoll loop over non-blocking sockets, reading into one reused buffer: the driver
    must cost far less per request than the servers it measures, or the ratio measures the
    driver (an asyncio-streams driver gave 1.43-1.88x where this one gives more).
    """
    request = (
        f"GET /{NAME} HTTP/1.1\r\nHost: localhost\r\n\r\n" if http else f"GET {NAME}\n"
    ).encode()
    marker = b"\r\n\r\n" if http else b"\n"
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
                    ok = b" 200 " in head[:20] if http else head == expected
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


#: A worker of ``tcpfiles --workers N`` serving its socket (its log line).
WORKER_LISTENING = re.compile(rb"\[worker \d+ tcpfiles\.core\.service#info\] files listening")


def start(kind: Kind, root: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``kind`` on a free port (pinned to the server's CPU when it is one process).

    ``tcpfiles --workers N`` listens (its parent binds) before its workers have started: the
    load waits until every worker says it serves, or it would time their start-up (a second,
    and their imports' CPU) as if it were serving."""
    port = free_port()
    errors = root.parent / f"stderr-{port}.txt"
    output = root.parent / f"stdout-{port}.txt" if kind.workers > 1 and not kind.http else None
    command = kind.command(root, port)
    proc = start_server(command, root.parent, port, kind.workers == 1, errors, output)
    if output is not None:
        deadline = time.monotonic() + 30
        while len(WORKER_LISTENING.findall(output.read_bytes())) < kind.workers:
            if time.monotonic() > deadline or proc.poll() is not None:
                stop(proc)
                sys.exit(f"{kind.label}: its {kind.workers} workers did not start within 30 s")
            time.sleep(0.05)
    return proc, port


@dataclass
class Run:
    """One measurement: requests/s, server CPU per request (µs), every latency."""

    rate: float
    cpu_us: float
    latencies: list[float]


def measure(kind: Kind, root: Path, mode: str, args: argparse.Namespace) -> Run:
    proc, port = start(kind, root)
    try:
        before = cpu_seconds(proc.pid)
        latencies, wall = load(
            kind.http, port, args.clients, args.requests, mode == "persistent", args.size
        )
        used = cpu_seconds(proc.pid) - before
    finally:
        stop(proc)
    return Run(len(latencies) / wall, used / len(latencies) * 1e6, latencies)


def rounds(
    root: Path, chosen: list[Kind], args: argparse.Namespace
) -> dict[tuple[str, str], list[Run]]:
    """Every kind in every mode, ``args.rounds`` times, the order rotated each round."""
    runs: dict[tuple[str, str], list[Run]] = {}
    for number in range(args.rounds):
        shift = number % len(chosen)
        for mode in MODES:
            for kind in chosen[shift:] + chosen[:shift]:
                if kind.label == "refused":
                    continue
                try:
                    run = measure(kind, root, mode, args)
                except ServerExited:
                    if kind.workers == 1 or kind.http:
                        raise
                    print(f"\n*** {refusal(kind, root)}\n*** {kind.label} is left out.\n")
                    chosen[chosen.index(kind)] = Kind("refused", False, kind.command)
                    continue
                runs.setdefault((kind.label, mode), []).append(run)
                print(
                    f"  round {number + 1}: {kind.label:<12} {mode:<19} {run.rate:8.0f} "
                    f"requests/s, {run.cpu_us:6.1f} µs CPU/request, p99 "
                    f"{sorted(run.latencies)[int(len(run.latencies) * 0.99)] * 1e3:.1f} ms",
                    flush=True,
                )
    return runs


def refusal(kind: Kind, root: Path) -> str:
    """What twistd says when tcpfiles --workers N does not start (its usage error, on stdout)."""
    command = kind.command(root, free_port())
    try:
        done = subprocess.run(command, capture_output=True, timeout=15, cwd=root.parent)
    except subprocess.TimeoutExpired:
        return f"{kind.label} did not listen, yet ran on: {command}"
    said = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()
    return f"twistd tcpfiles refused --workers {kind.workers} (exit {done.returncode}): " + (
        said[-1] if said else "no message"
    )


def reference(label: str, chosen: list[Kind]) -> str:
    """The tcpfiles a row is compared with: the one with as many processes."""
    workers = next((k.workers for k in chosen if k.label == label), 1)
    return next(
        (k.label for k in chosen if not k.http and k.workers == workers and k.label != "refused"),
        "tcpfiles",
    )


def report(
    runs: dict[tuple[str, str], list[Run]], chosen: list[Kind], args: argparse.Namespace
) -> None:
    print(
        f"\n{args.clients} clients, {args.requests} requests of {args.size} B per "
        f"measurement; median of {args.rounds}; {len(CPUS)} CPUs, "
        f"Python {sys.version.split()[0]}"
    )
    print(
        f"{'server':<12} {'mode':<19} {'requests/s':>10} {'µs CPU/req':>10} {'tcpfiles ×':>10} "
        f"{'same round':>10} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    )
    for (label, mode), seen in runs.items():
        mine = runs.get((reference(label, chosen), mode), [])
        rate = statistics.median(r.rate for r in seen)
        ratio = statistics.median(r.rate for r in mine) / rate if mine else float("nan")
        paired = [a.rate / b.rate for a, b in zip(mine, seen, strict=False)]
        same = statistics.median(paired) if paired else float("nan")
        merged = sorted(x for run in seen for x in run.latencies)
        cpu = statistics.median(r.cpu_us for r in seen)
        print(
            f"{label:<12} {mode:<19} {rate:10.0f} {cpu:10.1f} "
            f"{ratio:10.2f} {same:10.2f} {merged[len(merged) // 2] * 1e3:7.1f} "
            f"{merged[int(len(merged) * 0.99)] * 1e3:7.1f} {merged[-1] * 1e3:7.1f}"
        )
    for kind in chosen:
        if kind.label.startswith("nginx"):
            mine = reference(kind.label, chosen)
            for mode in MODES:
                if (mine, mode) in runs and (kind.label, mode) in runs:
                    paired = [
                        a.rate / b.rate
                        for a, b in zip(runs[(mine, mode)], runs[(kind.label, mode)], strict=False)
                    ]
                    print(
                        f"{mine} / {kind.label}, {mode}: {statistics.median(paired):.2f} "
                        f"(median of the rounds' ratios; range {min(paired):.2f}-{max(paired):.2f})"
                    )


def idle_cost(root: Path, count: int) -> None:
    proc, port = start(Kind("tcpfiles", False, tcpfiles_command), root)
    try:
        before = rss_mib(proc.pid)

        async def hold() -> float:
            writers = await idle_connections(port, count)
            grown = rss_mib(proc.pid) - before
            for writer in writers:
                writer.close()
            return grown

        grown = asyncio.run(hold())
    finally:
        stop(proc)
    print(
        f"\n{count} idle connections: tcpfiles RSS +{grown:.1f} MiB "
        f"({grown * 1024 / count:.1f} KiB each)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle", type=int, default=1000, help="idle connections (0: skip)")
    parser.add_argument(
        "--workers", type=int, default=1, help="also run tcpfiles --workers N and nginx with N"
    )
    parser.add_argument(
        "--servers", help="comma-separated labels to run (default: all), e.g. tcpfiles,nginx"
    )
    args = parser.parse_args()
    pin(CPUS[0])()
    chosen = kinds(args.workers)
    if args.servers:
        wanted = set(args.servers.split(","))
        chosen = [k for k in chosen if k.label in wanted]
    with tempfile.TemporaryDirectory(prefix="tcpfiles-many-") as tmp:
        os.chmod(tmp, 0o755)  # nginx's workers run as an unprivileged user
        root = Path(tmp) / "files"
        root.mkdir()
        (root / NAME).write_bytes(os.urandom(args.size))
        os.chmod(root / NAME, 0o644)
        runs = rounds(root, chosen, args)
        report(runs, chosen, args)
        if args.idle:
            idle_cost(root, args.idle)


if __name__ == "__main__":
    main()
