#!/usr/bin/env python3
"""Chat fan-out: how fast one room delivers everyone's messages to everyone else.

    python bench/chat.py                       # 200 clients, 200 messages, 5 rounds
    python bench/chat.py --clients 200 --messages 1000

A fresh ``twistd tcpfiles --serve chat`` per round, on 127.0.0.1 only, with flood control and the
per-peer limit lifted (far faster than a person types).  The clients connect from 127.0.0.2,
127.0.0.3, ... (loopback all), at most ``PER_ADDRESS`` from each, so that the room's join limit
per address (a burst of 60) sees a crowd, not one address joining 200 times.  The
driver (one asyncio process, pinned to one CPU, the server to the other) connects the clients,
joins them, then has them send ``--messages`` messages in turn, as fast as it can.  Each message
carries its send time; every delivery is timed.  Printed: deliveries per second (from the first
send to the last delivery) and the p50/p99 delivery latency, medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import free_port, peak_rss_mib, pin, twistd

TIME_LIMIT = 120.0
CPUS = sorted(os.sched_getaffinity(0))
DRIVER_CPU, SERVER_CPU = (CPUS[0], CPUS[1]) if len(CPUS) >= 2 else (None, None)


class Client(asyncio.Protocol):
    """One chat user: records when each message line arrives."""

    def __init__(self, nick: str, run: Run) -> None:
        self.nick, self.run = nick, run
        self.buffer = b""
        self.joined = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(f"/nick {self.nick}\n".encode())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for line in lines:
            if line.startswith(b"<"):  # "<nick> SENT_AT"
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
        self.last = 0.0
        self.done = asyncio.get_running_loop().create_future()

    def delivered(self, now: float, sent_at: float) -> None:
        self.latencies.append(now - sent_at)
        self.last = now
        if len(self.latencies) == self.expected and not self.done.done():
            self.done.set_result(None)


#: Clients that connect from one loopback address (below the room's join burst of 60).
PER_ADDRESS = 50


async def fan_out(port: int, clients: int, messages: int) -> tuple[float, float, float]:
    loop = asyncio.get_running_loop()
    run = Run(messages * (clients - 1))
    users = []
    for n in range(clients):
        source = (f"127.0.0.{2 + n // PER_ADDRESS}", 0)
        _, user = await loop.create_connection(
            lambda n=n: Client(f"u{n}", run), "127.0.0.1", port, local_addr=source
        )
        users.append(user)
    await asyncio.wait_for(asyncio.gather(*(u.joined for u in users)), TIME_LIMIT)
    await asyncio.sleep(0.2)  # let the join notices drain before timing
    started = time.perf_counter()
    for m in range(messages):
        users[m % clients].say()
        if m % clients == clients - 1:
            await asyncio.sleep(0)  # let the loop write and read between sweeps
    await asyncio.wait_for(run.done, TIME_LIMIT)
    for user in users:
        user.transport.close()
    ordered = sorted(run.latencies)
    return (
        len(ordered) / (run.last - started),
        ordered[len(ordered) // 2],
        ordered[int(len(ordered) * 0.99)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if DRIVER_CPU is not None:
        os.sched_setaffinity(0, {DRIVER_CPU})
    rates, p50s, p99s, peaks = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="tcpfiles-chat-") as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        for n in range(args.rounds):
            port = free_port()
            proc = subprocess.Popen(
                twistd(
                    "tcpfiles",
                    "--root",
                    str(root),
                    "--serve",
                    f"chat=tcp:{port}:interface=127.0.0.1",
                    "--chat-rate",
                    "1e9",
                    "--chat-burst",
                    "1e9",
                    "--chat-history",
                    "0",
                    "--chat-max-per-peer",
                    "100000",
                    "--chat-max-queue",
                    str(1 << 26),
                    port=free_port(),
                ),
                cwd=tmp,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=pin(SERVER_CPU),
            )
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    if "chat listening on" in line:
                        break
                rate, p50, p99 = asyncio.run(fan_out(port, args.clients, args.messages))
                peaks.append(peak_rss_mib(proc.pid))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            rates.append(rate)
            p50s.append(p50)
            p99s.append(p99)
            print(
                f"  round {n + 1}: {rate:9.0f} deliveries/s  p50 {p50 * 1e3:6.1f} ms  "
                f"p99 {p99 * 1e3:6.1f} ms",
                flush=True,
            )
    print(
        f"\n{args.clients} clients, {args.messages} messages "
        f"({args.messages * (args.clients - 1)} deliveries) per round; median of "
        f"{args.rounds}; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    print(
        f"deliveries/s {statistics.median(rates):.0f}   p50 "
        f"{statistics.median(p50s) * 1e3:.1f} ms   p99 {statistics.median(p99s) * 1e3:.1f} ms"
        f"   server peak RSS {max(peaks):.1f} MiB"
    )


if __name__ == "__main__":
    main()
