#!/usr/bin/env python3
"""Echo servers side by side: round trips per second and streaming throughput.

    python bench/echo.py                  # 100 conns x 1000 round trips of 1 KiB; 256 MiB stream
    python bench/echo.py --rounds 5 --stream-mib 1024

Servers (each started fresh for each measurement, on 127.0.0.1 only): tcpfiles' echo
behaviour under twistd, a stdlib asyncio echo server and a bare Twisted echo protocol
(bench/echo_servers.py).  The same asyncio-protocol driver loads each, pinned to one CPU and
the server to another (round trips between two processes are otherwise dominated by where the
scheduler puts them); medians of the rounds, the order rotating.  Every load is bounded in count
and has a time limit.
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

HERE = Path(__file__).parent
TIME_LIMIT = 300.0
# Client and server each get a core of their own, the same for every server measured.
CPUS = sorted(os.sched_getaffinity(0))
DRIVER_CPU, SERVER_CPU = (CPUS[0], CPUS[1]) if len(CPUS) >= 2 else (None, None)


def command(kind: str, port: int, root: Path) -> list[str]:
    if kind == "tcpfiles":
        # All load comes from one address: lift the per-peer limit (64 by default).
        return twistd(
            "tcpfiles",
            "--root",
            str(root),
            "--serve",
            f"echo=tcp:{port}:interface=127.0.0.1",
            "--echo-max-per-peer",
            "1000",
            port=free_port(),
        )
    return [sys.executable, str(HERE / "echo_servers.py"), kind, str(port)]


class RoundTrips(asyncio.Protocol):
    """Send a block, wait for all of it to come back, repeat ``count`` times."""

    def __init__(self, block: bytes, count: int, done: asyncio.Future[None]) -> None:
        self.block, self.left, self.done = block, count, done
        self.pending = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        self.pending = len(self.block)
        self.transport.write(self.block)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.pending -= len(data)
        if self.pending == 0:
            self.left -= 1
            if self.left:
                self._send()
            else:
                self.transport.close()
                self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed early"))


class Stream(asyncio.Protocol):
    """Write ``total`` bytes as fast as flow control allows while reading the echo back."""

    def __init__(self, total: int, done: asyncio.Future[None]) -> None:
        self.total, self.received, self.done = total, 0, done
        self.to_send = total
        self.block = b"x" * (256 * 1024)
        self.can_write = asyncio.Event()
        self.can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        asyncio.get_running_loop().create_task(self._writer())

    async def _writer(self) -> None:
        while self.to_send > 0:
            await self.can_write.wait()
            chunk = self.block[: min(len(self.block), self.to_send)]
            self.transport.write(chunk)  # type: ignore[attr-defined]
            self.to_send -= len(chunk)

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.total:
            self.transport.close()
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed early"))


async def round_trips(port: int, connections: int, count: int, size: int) -> float:
    loop = asyncio.get_running_loop()
    block = os.urandom(size)
    futures = [loop.create_future() for _ in range(connections)]
    started = time.perf_counter()
    for future in futures:
        await loop.create_connection(
            lambda f=future: RoundTrips(block, count, f), "127.0.0.1", port
        )
    await asyncio.wait_for(asyncio.gather(*futures), TIME_LIMIT)
    return connections * count / (time.perf_counter() - started)


async def stream(port: int, total: int) -> float:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    started = time.perf_counter()
    await loop.create_connection(lambda: Stream(total, done), "127.0.0.1", port)
    await asyncio.wait_for(done, TIME_LIMIT)
    return total / (time.perf_counter() - started) / 1e6


def measure(kind: str, root: Path, what: str, args: argparse.Namespace) -> tuple[float, float]:
    port = free_port()
    proc = subprocess.Popen(
        command(kind, port, root),
        cwd=root.parent,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=pin(SERVER_CPU),
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wait until it says it is listening
            if "ready" in line or "echo listening on" in line:
                break
        else:
            raise RuntimeError(f"{kind} exited before listening")
        if what == "rtt":
            value = asyncio.run(round_trips(port, args.connections, args.trips, args.size))
        else:
            value = asyncio.run(stream(port, args.stream_mib << 20))
        return value, peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    if DRIVER_CPU is not None:
        os.sched_setaffinity(0, {DRIVER_CPU})
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--trips", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--stream-mib", type=int, default=256)
    args = parser.parse_args()
    kinds = ["tcpfiles", "asyncio", "twisted"]
    results: dict[tuple[str, str], list[float]] = {}
    peaks: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tcpfiles-echo-") as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        for n in range(args.rounds):
            order = kinds[n % 3 :] + kinds[: n % 3]
            for what in ("rtt", "stream"):
                for kind in order:
                    value, rss = measure(kind, root, what, args)
                    results.setdefault((kind, what), []).append(value)
                    peaks[kind] = max(peaks.get(kind, 0.0), rss)
                    unit = "round trips/s" if what == "rtt" else "MB/s"
                    print(f"  round {n + 1}: {kind:<9} {what:<6} {value:10.0f} {unit}", flush=True)
    print(
        f"\n{args.connections} connections x {args.trips} round trips of {args.size} B; "
        f"one {args.stream_mib} MiB stream; median of {args.rounds}; {os.cpu_count()} CPUs"
    )
    print(
        f"{'server':<10} {'round trips/s':>14} {'tcpfiles ×':>11} {'stream MB/s':>12} "
        f"{'tcpfiles ×':>11} {'peak RSS MiB':>13}"
    )
    median = {key: statistics.median(values) for key, values in results.items()}
    for kind in kinds:
        rtt, mbs = median[(kind, "rtt")], median[(kind, "stream")]
        print(
            f"{kind:<10} {rtt:14.0f} {median[('tcpfiles', 'rtt')] / rtt:11.2f} {mbs:12.0f} "
            f"{median[('tcpfiles', 'stream')] / mbs:11.2f} {peaks[kind]:13.1f}"
        )


if __name__ == "__main__":
    main()
