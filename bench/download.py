#!/usr/bin/env python3
"""One big file, downloaded from tcpfiles and from reference servers, side by side.

    python bench/download.py                       # 1 GiB, 5 rounds, every server found
    python bench/download.py --size-mib 256 --rounds 3 --servers "tcpfiles,nginx"
    python bench/download.py --chart docs/performance-download.png     # needs matplotlib

Servers, each started fresh for every download on 127.0.0.1 only: tcpfiles (sendfile),
tcpfiles --no-sendfile (the copying producer), twistd web, python -m http.server, nginx (one
worker, sendfile on, tcp_nopush on; when installed: ``apt-get install nginx-light``), and over TLS
tcpfiles and twistd web (a throwaway certificate made with ``cryptography``).  The driver is
pinned to one CPU and the server to the other, reads every body into one reused buffer, and
times from request to last byte.  Printed: median MB/s, tcpfiles' ratio to each, and the growth
of each server's RSS during the download (sampled every 20 ms, minus its RSS just before).
The order rotates each round.  Every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import (
    CPUS,
    cpu_seconds,
    free_port,
    make_certificate,
    nginx_binary,
    nginx_command,
    pin,
    rss_mib,
    start_server,
    stop,
    twistd,
)

NAME = "big.bin"
HTTP_REQUEST = f"GET /{NAME} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode()


@dataclass
class Server:
    """How to start one kind of server, and how to ask it for the file."""

    label: str
    command: Callable[[Path, int], list[str]]
    http: bool
    tls: bool = False


def servers(cert: Path, key: Path) -> list[Server]:
    tls_opts = f":certKey={cert}:privateKey={key}"
    found = [
        Server("tcpfiles", lambda r, p: twistd("tcpfiles", "--root", str(r), port=p), False),
        Server(
            "tcpfiles copy",
            lambda r, p: twistd("tcpfiles", "--root", str(r), "--no-sendfile", port=p),
            False,
        ),
        Server("twistd web", lambda r, p: twistd("web", "--path", str(r), port=p), True),
        Server(
            "http.server",
            lambda r, p: [
                sys.executable,
                "-m",
                "http.server",
                str(p),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(r),
            ],
            True,
        ),
        Server(
            "tcpfiles tls",
            lambda r, p: twistd("tcpfiles", "--root", str(r), port=p, kind="ssl", extra=tls_opts),
            False,
            True,
        ),
        Server(
            "twistd web tls",
            lambda r, p: twistd("web", "--path", str(r), port=p, kind="ssl", extra=tls_opts),
            True,
            True,
        ),
    ]
    if nginx_binary():
        found.insert(2, Server("nginx", nginx_command, True))
    else:
        print("nginx not found: apt-get install nginx-light (it is then measured too)")
    return found


def download(port: int, server: Server, size: int, buffer: bytearray) -> float:
    """Fetch the file once; seconds from request to last byte."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=60)
    if server.tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        sock: socket.socket = context.wrap_socket(raw, server_hostname="localhost")
    else:
        sock = raw
    with sock:
        started = time.perf_counter()
        sock.sendall(HTTP_REQUEST if server.http else f"GET {NAME}\n".encode())
        head = b""
        marker = b"\r\n\r\n" if server.http else b"\n"
        while marker not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError(f"{server.label}: closed before the header: {head[:200]!r}")
            head += chunk
        header, _, body = head.partition(marker)
        if server.http:
            assert b" 200 " in header.split(b"\r\n")[0], header[:200]
        else:
            assert header == f"OK {size}".encode(), header[:200]
        left = size - len(body)
        view = memoryview(buffer)
        while left > 0:
            got = sock.recv_into(view, min(left, len(buffer)))
            if not got:
                raise RuntimeError(f"{server.label}: closed with {left} bytes to go")
            left -= got
        return time.perf_counter() - started


class RSSWatch:
    """Sample a process tree's RSS while something runs; the largest growth seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = rss_mib(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mib(self.pid))

    def __enter__(self) -> RSSWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib(self.pid))


def one_run(
    server: Server, root: Path, size: int, buffers: list[bytearray]
) -> tuple[float, float, float]:
    """One fresh server, ``len(buffers)`` clients downloading the file at once: the aggregate
    MB/s, the server's RSS growth (MiB) and its CPU seconds per GiB sent."""
    port = free_port()
    proc = start_server(server.command(root, port), root.parent, port)
    try:
        cpu_before = cpu_seconds(proc.pid)
        with RSSWatch(proc.pid) as watch:
            started = time.perf_counter()
            if len(buffers) == 1:
                download(port, server, size, buffers[0])
            else:
                errors: list[BaseException] = []

                def client(buffer: bytearray) -> None:
                    try:
                        download(port, server, size, buffer)
                    except BaseException as exc:  # reported below, in the main thread
                        errors.append(exc)

                threads = [threading.Thread(target=client, args=(b,)) for b in buffers]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                if errors:
                    raise errors[0]
            seconds = time.perf_counter() - started
        cpu = cpu_seconds(proc.pid) - cpu_before
    finally:
        stop(proc)
    total = size * len(buffers)
    return total / seconds / 1e6, watch.peak - watch.baseline, cpu / (total / (1 << 30))


def chart(path: str, medians: dict[str, float], title: str) -> None:
    """A bar chart of the medians (matplotlib, when installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: pip install matplotlib for --chart")
        return
    labels = list(medians)
    figure, axes = plt.subplots(figsize=(8, 3.6))
    bars = axes.barh(
        labels,
        [medians[x] for x in labels],
        color=["#2a7ab0" if x.startswith("tcpfiles") else "#999999" for x in labels],
    )
    axes.bar_label(bars, fmt="%.0f", padding=3)
    axes.invert_yaxis()
    axes.set_xlabel("MB/s (median), higher is better")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"chart written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--servers", help="comma-separated subset (default: all found)")
    parser.add_argument("--chart", metavar="PNG", help="also draw the medians as a bar chart")
    parser.add_argument(
        "--clients", type=int, default=1, help="clients downloading the file at once (default 1)"
    )
    args = parser.parse_args()
    pin(CPUS[0])()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="tcpfiles-bench-") as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        os.chmod(tmp, 0o755)  # nginx's worker runs as an unprivileged user
        cert, key = make_certificate(Path(tmp))
        chosen = servers(cert, key)
        if args.servers:
            wanted = set(args.servers.split(","))
            chosen = [s for s in chosen if s.label in wanted]
        block = os.urandom(1 << 20)
        with open(root / NAME, "wb") as out:
            for _ in range(args.size_mib):
                out.write(block)
        os.chmod(root / NAME, 0o644)
        with open(root / NAME, "rb") as warm:  # into the page cache
            while warm.read(1 << 24):
                pass
        buffers = [bytearray(8 << 20) for _ in range(args.clients)]
        rates: dict[str, list[float]] = {s.label: [] for s in chosen}
        growth: dict[str, float] = {s.label: 0.0 for s in chosen}
        cpu: dict[str, list[float]] = {s.label: [] for s in chosen}
        for round_number in range(args.rounds):
            turn = round_number % len(chosen)
            for server in chosen[turn:] + chosen[:turn]:
                rate, grew, cpu_per_gib = one_run(server, root, size, buffers)
                rates[server.label].append(rate)
                growth[server.label] = max(growth[server.label], grew)
                cpu[server.label].append(cpu_per_gib)
                print(
                    f"  round {round_number + 1}: {server.label:<15} {rate:8.0f} MB/s  "
                    f"RSS +{grew:5.1f} MiB  CPU {cpu_per_gib:.2f} s/GiB",
                    flush=True,
                )
    medians = {label: statistics.median(values) for label, values in rates.items()}
    clients = f"{args.clients} clients at once" if args.clients > 1 else "one client"
    print(
        f"\n{args.size_mib} MiB file, {clients}, {args.rounds} rounds, median of each; "
        f"{len(CPUS)} CPUs (driver and server pinned apart), Python {sys.version.split()[0]}"
    )
    print(
        f"{'server':<15} {'MB/s':>8} {'tcpfiles ×':>11} {'same-round × (range)':>22} "
        f"{'RSS growth MiB':>15} {'server CPU s/GiB':>17}"
    )
    for label, median in medians.items():
        ours = "tcpfiles tls" if label.endswith(" tls") else "tcpfiles"
        mine = medians.get(ours, median)
        # The ratio within each round, where both ran minutes apart at most: the machine's
        # drift between rounds (±25% seen) cancels out of these.
        paired = [a / b for a, b in zip(rates.get(ours, rates[label]), rates[label], strict=True)]
        spread = f"{statistics.median(paired):.2f} ({min(paired):.2f}-{max(paired):.2f})"
        print(
            f"{label:<15} {median:8.0f} {mine / median:11.2f} {spread:>22} "
            f"{growth[label]:15.1f} {statistics.median(cpu[label]):17.2f}"
        )
    print("(tls rows compare with tcpfiles tls; the others with tcpfiles)")
    if args.chart:
        chart(args.chart, medians, f"{args.size_mib} MiB download over loopback, {len(CPUS)} CPUs")


if __name__ == "__main__":
    main()
