#!/usr/bin/env python3
"""One big file, downloaded from tcpfiles and from reference servers, side by side.

    python bench/download.py                 # 1 GiB, 5 rounds
    python bench/download.py --size-mib 256 --rounds 3

Every server is started fresh for each download, on 127.0.0.1 only, serving the same page-cached
file; the order rotates each round.  The client reads into one reused buffer and times from
request to last byte.  Printed: median MB/s per server, tcpfiles' ratio to each reference, and
each server's peak RSS (VmHWM, the most of any round).  Nothing but loopback is touched, and
every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import free_port, peak_rss_mib, twistd

NAME = "big.bin"


@dataclass
class Server:
    """How to start one kind of server, and how to ask it for the file."""

    label: str
    command: Callable[[Path, int], list[str]]
    request: bytes
    http: bool


SERVERS = [
    Server(
        "tcpfiles",
        lambda root, port: twistd("tcpfiles", "--root", str(root), port=port),
        f"GET {NAME}\n".encode(),
        False,
    ),
    Server(
        "twistd web",
        lambda root, port: twistd("web", "--path", str(root), port=port),
        f"GET /{NAME} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode(),
        True,
    ),
    Server(
        "http.server",
        lambda root, port: [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(root),
        ],
        f"GET /{NAME} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode(),
        True,
    ),
]


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited early: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"server did not listen within {timeout} s: {proc.args}")


def download(port: int, server: Server, size: int, buffer: bytearray) -> float:
    """Fetch the file once; seconds from request to last byte."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        started = time.perf_counter()
        sock.sendall(server.request)
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


def one_run(server: Server, root: Path, size: int, buffer: bytearray) -> tuple[float, float]:
    port = free_port()
    proc = subprocess.Popen(
        server.command(root, port),
        cwd=root.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, proc)
        seconds = download(port, server, size, buffer)
        rss = peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return size / seconds / 1e6, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--servers",
        default=",".join(s.label for s in SERVERS),
        help="comma-separated subset to run (tcpfiles is always run)",
    )
    args = parser.parse_args()
    wanted = {"tcpfiles", *args.servers.split(",")}
    servers = [s for s in SERVERS if s.label in wanted]
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="tcpfiles-bench-") as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        block = os.urandom(1 << 20)
        with open(root / NAME, "wb") as out:
            for _ in range(args.size_mib):
                out.write(block)
        with open(root / NAME, "rb") as warm:  # into the page cache
            while warm.read(1 << 24):
                pass
        buffer = bytearray(1 << 20)
        rates: dict[str, list[float]] = {s.label: [] for s in servers}
        peaks: dict[str, float] = {s.label: 0.0 for s in servers}
        for round_number in range(args.rounds):
            turn = round_number % len(servers)
            order = servers[turn:] + servers[:turn]
            for server in order:
                rate, rss = one_run(server, root, size, buffer)
                rates[server.label].append(rate)
                peaks[server.label] = max(peaks[server.label], rss)
                print(
                    f"  round {round_number + 1}: {server.label:<12} {rate:8.0f} MB/s  "
                    f"peak RSS {rss:5.1f} MiB",
                    flush=True,
                )
    medians = {label: statistics.median(values) for label, values in rates.items()}
    print(
        f"\n{args.size_mib} MiB file, {args.rounds} rounds, median of each; "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    print(f"{'server':<12} {'MB/s':>8} {'tcpfiles ×':>11} {'peak RSS MiB':>13}")
    for label, median in medians.items():
        ratio = medians["tcpfiles"] / median
        print(f"{label:<12} {median:8.0f} {ratio:11.2f} {peaks[label]:13.1f}")


if __name__ == "__main__":
    main()
