#!/usr/bin/env python3
"""Chat fan-out: how fast one room delivers everyone's messages to everyone else.

    python bench/chat.py                       # 200 clients, 200 messages, 5 rounds
    python bench/chat.py --clients 200 --messages 1000
    python bench/chat.py --nodes 2             # also: the room over 2 processes and Redis

A fresh ``twistd tcpfiles --serve chat`` per round, on 127.0.0.1 only, with flood control and the
per-peer limit lifted (far faster than a person types).  The clients connect from 127.0.0.2,
127.0.0.3, ... (loopback all), at most ``PER_ADDRESS`` from each, so that the room's join limit
per address (a burst of 60) sees a crowd, not one address joining 200 times.  The
driver (one asyncio process, pinned to one CPU, the server to the other) connects the clients,
joins them, then has them send ``--messages`` messages in turn, as fast as it can.  Each message
carries its send time; every delivery is timed.  Printed: deliveries per second (from the first
send to the last delivery), the p50/p99 delivery latency, and the server's CPU time per 1000
deliveries (from /proc: steadier than the rates on a shared machine), medians over the rounds.

With ``--nodes N`` (N > 1) each round also runs the room over N processes sharing one
redis-server (``--chat-bus``, started here on a free loopback port, nothing saved), the clients
split over them in turn; every process and Redis share the server CPU, so both figures come from
the same CPU budget (Redis's CPU is counted in the server's).  Every delivery is counted: a
message missing or delivered twice is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import free_port, peak_rss_mib, pin, twistd

TIME_LIMIT = 120.0
CPUS = sorted(os.sched_getaffinity(0))
DRIVER_CPU, SERVER_CPU = (CPUS[0], CPUS[1]) if len(CPUS) >= 2 else (None, None)


class Client(asyncio.Protocol):
    """One chat user: records when each message line arrives, and any line seen twice."""

    def __init__(self, nick: str, run: Run) -> None:
        self.nick, self.run = nick, run
        self.buffer = b""
        self.seen: set[bytes] = set()
        self.joined = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(f"/nick {self.nick}\n".encode())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for line in lines:
            if line.startswith(b"<"):  # "<nick> SENT_AT": unique per message
                if line in self.seen:
                    self.run.twice += 1
                    continue
                self.seen.add(line)
                self.run.delivered(now, float(line.split(b" ", 1)[1]))
            elif line.startswith(b"*** welcome") and not self.joined.done():
                self.joined.set_result(None)
            elif line.startswith(b"!!!"):
                raise RuntimeError(f"{self.nick}: {line!r}")

    def say(self) -> None:
        self.transport.write(f"{time.perf_counter():.9f}\n".encode())  # type: ignore[attr-defined]


class Run:
    """One measurement."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.latencies: list[float] = []
        self.twice = 0
        self.last = 0.0
        self.done = asyncio.get_running_loop().create_future()

    def delivered(self, now: float, sent_at: float) -> None:
        self.latencies.append(now - sent_at)
        self.last = now
        if len(self.latencies) == self.expected and not self.done.done():
            self.done.set_result(None)


#: Clients that connect from one loopback address (below the room's join burst of 60).
PER_ADDRESS = 50


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) the processes have used, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


async def fan_out(
    ports: list[int], clients: int, messages: int, pids: list[int]
) -> dict[str, float]:
    """Clients split over ``ports`` in turn; every message to every other client, counted."""
    loop = asyncio.get_running_loop()
    run = Run(messages * (clients - 1))
    users = []
    for n in range(clients):
        source = (f"127.0.0.{2 + n // PER_ADDRESS}", 0)
        _, user = await loop.create_connection(
            lambda n=n: Client(f"u{n}", run), "127.0.0.1", ports[n % len(ports)], local_addr=source
        )
        users.append(user)
    await asyncio.wait_for(asyncio.gather(*(u.joined for u in users)), TIME_LIMIT)
    await asyncio.sleep(0.5)  # let the join notices drain (over the bus too) before timing
    started, cpu = time.perf_counter(), cpu_seconds(pids)
    for m in range(messages):
        users[m % clients].say()
        if m % clients == clients - 1:
            await asyncio.sleep(0)  # let the loop write and read between sweeps
    try:
        await asyncio.wait_for(asyncio.shield(run.done), TIME_LIMIT)
    except TimeoutError:
        pass  # reported as missing
    cpu = cpu_seconds(pids) - cpu
    await asyncio.sleep(0.5)  # a late second copy would arrive by now
    for user in users:
        user.transport.close()
    ordered = sorted(run.latencies) or [float("nan")]
    return {
        "rate": len(run.latencies) / max(run.last - started, 1e-9),
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[int(len(ordered) * 0.99)],
        "missing": run.expected - len(run.latencies),
        "twice": run.twice,
        "cpu_per_k": cpu / max(len(run.latencies), 1) * 1000,
    }


class Node:
    """One ``twistd tcpfiles --serve chat`` on the server CPU; its log read as it comes."""

    def __init__(self, root: Path, bus: str | None, prefix: str) -> None:
        self.port = free_port()
        options = [
            "--root", str(root), "--serve", f"chat=tcp:{self.port}:interface=127.0.0.1",
            "--chat-rate", "1e9", "--chat-burst", "1e9", "--chat-history", "0",
            "--chat-max-per-peer", "100000", "--chat-max-queue", str(1 << 26),
        ]  # fmt: skip
        if bus is not None:
            options += ["--chat-bus", bus, "--chat-bus-prefix", prefix]
        self.proc = subprocess.Popen(
            twistd("tcpfiles", *options, port=free_port()),
            cwd=root.parent,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=pin(SERVER_CPU),
        )
        self.ready = threading.Event()
        self.marker = "the room spans processes" if bus else "chat listening on"
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(30):
            self.stop()
            sys.exit(f"chat server not ready in 30 s: {self.proc.args}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if self.marker in line:
                self.ready.set()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """redis-server on a free loopback port, nothing saved, on the server CPU; (process, URL)."""
    binary = shutil.which("redis-server", path="/usr/bin:/usr/sbin:" + os.environ["PATH"])
    if binary is None:
        sys.exit("--nodes needs redis-server (Debian: apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        preexec_fn=pin(SERVER_CPU),
    )  # fmt: skip
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.sendall(b"PING\r\n")
                if probe.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    sys.exit("redis-server did not answer")


def one_round(
    root: Path, nodes: int, bus: tuple[int, str] | None, args: argparse.Namespace, n: int
) -> dict:
    url = None if bus is None or nodes == 1 else bus[1]
    servers = [Node(root, url, f"bench{n}") for _ in range(nodes)]
    pids = [s.proc.pid for s in servers] + ([bus[0]] if url is not None and bus else [])
    try:
        ports = [s.port for s in servers]
        result = asyncio.run(fan_out(ports, args.clients, args.messages, pids))
        result["rss"] = max(peak_rss_mib(s.proc.pid) for s in servers)
    finally:
        for server in servers:
            server.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=1, help="also over N processes and Redis")
    args = parser.parse_args()
    if DRIVER_CPU is not None:
        os.sched_setaffinity(0, {DRIVER_CPU})
    layouts = [1] if args.nodes <= 1 else [1, args.nodes]
    results: dict[int, list[dict]] = {nodes: [] for nodes in layouts}
    redis = None
    with tempfile.TemporaryDirectory(prefix="tcpfiles-chat-") as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        bus = None
        if args.nodes > 1:
            redis, url = start_redis(Path(tmp))
            bus = (redis.pid, url)
        try:
            for n in range(args.rounds):
                for nodes in layouts:  # alternated in each round
                    r = one_round(root, nodes, bus, args, n)
                    results[nodes].append(r)
                    print(
                        f"  round {n + 1}, {nodes} process(es): {r['rate']:9.0f} deliveries/s"
                        f"  p50 {r['p50'] * 1e3:6.1f} ms  p99 {r['p99'] * 1e3:6.1f} ms"
                        f"  server CPU {r['cpu_per_k'] * 1e3:5.1f} ms/1000  missing {r['missing']}"
                        f"  twice {r['twice']}",
                        flush=True,
                    )
        finally:
            if redis is not None:
                redis.send_signal(signal.SIGTERM)
                redis.wait(timeout=30)
    report(args, results)


def report(args: argparse.Namespace, results: dict[int, list[dict]]) -> None:
    print(
        f"\n{args.clients} clients, {args.messages} messages "
        f"({args.messages * (args.clients - 1)} deliveries) per round; median of "
        f"{args.rounds}; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    for nodes, rounds in results.items():
        label = "1 process  " if nodes == 1 else f"{nodes} processes + Redis"
        print(
            f"{label}: deliveries/s {statistics.median(r['rate'] for r in rounds):.0f}   p50 "
            f"{statistics.median(r['p50'] for r in rounds) * 1e3:.1f} ms   p99 "
            f"{statistics.median(r['p99'] for r in rounds) * 1e3:.1f} ms   missing "
            f"{sum(r['missing'] for r in rounds)}   twice {sum(r['twice'] for r in rounds)}"
            f"   server CPU {statistics.median(r['cpu_per_k'] for r in rounds) * 1e3:.1f} ms"
            " per 1000 deliveries"
            f"   server peak RSS {max(r['rss'] for r in rounds):.1f} MiB"
        )


if __name__ == "__main__":
    main()
