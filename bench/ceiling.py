#!/usr/bin/env python3
"""What the kernel itself allows for one loopback stream: sendfile against read-and-send.

    python bench/ceiling.py                  # 1 GiB, 5 rounds

No framework at all: a sender process loops ``os.sendfile`` (4 MiB per call) or ``pread`` +
``sendall`` (1 MiB), a receiver reads into one buffer; sender and receiver pinned to different
CPUs, on 127.0.0.1.  This is the ceiling any server in the download bench can reach with each
method here (nginx and tcpfiles use sendfile, ``--no-sendfile`` and http.server copy).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import CPUS

METHODS = ("sendfile", "copy")


def send(method: str, sock: socket.socket, fd: int, size: int) -> None:
    offset = 0
    if method == "sendfile":
        while offset < size:
            offset += os.sendfile(sock.fileno(), fd, offset, min(4 << 20, size - offset))
    else:
        while offset < size:
            data = os.pread(fd, 1 << 20, offset)
            sock.sendall(data)
            offset += len(data)


def one(method: str, path: Path, size: int) -> float:
    """MB/s of one transfer of the whole file."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the receiver
        try:
            if len(CPUS) > 1:
                os.sched_setaffinity(0, {CPUS[0]})
            sock = socket.create_connection(("127.0.0.1", port), timeout=60)
            buffer = bytearray(8 << 20)
            left = size
            started = time.perf_counter()
            while left:
                got = sock.recv_into(buffer)
                if not got:
                    break
                left -= got
            rate = size / (time.perf_counter() - started) / 1e6 if not left else 0.0
            os.write(write_end, f"{rate}\n".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    if len(CPUS) > 1:
        os.sched_setaffinity(0, {CPUS[1]})
    conn, _ = listener.accept()
    fd = os.open(path, os.O_RDONLY)
    try:
        send(method, conn, fd, size)
    finally:
        os.close(fd)
        conn.close()
        listener.close()
        os.waitpid(child, 0)
    with os.fdopen(read_end) as result:
        rate = float(result.read() or 0)
    if not rate:
        sys.exit(f"{method}: the receiver did not get the whole file")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    size = args.size_mib << 20
    rates: dict[str, list[float]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory(prefix="tcpfiles-ceiling-") as tmp:
        path = Path(tmp) / "big.bin"
        block = os.urandom(1 << 20)
        with open(path, "wb") as out:
            for _ in range(args.size_mib):
                out.write(block)
        for round_number in range(args.rounds):
            order = METHODS if round_number % 2 == 0 else METHODS[::-1]
            for method in order:
                rates[method].append(one(method, path, size))
                print(f"  round {round_number + 1}: {method:<8} {rates[method][-1]:6.0f} MB/s")
    print(f"\n{args.size_mib} MiB over loopback, median of {args.rounds}, no framework")
    for method, seen in rates.items():
        print(f"{method:<8} {statistics.median(seen):6.0f} MB/s  ({min(seen):.0f}-{max(seen):.0f})")
    paired = [a / b for a, b in zip(rates["copy"], rates["sendfile"], strict=True)]
    print(f"copy / sendfile, same round: {statistics.median(paired):.2f} (median)")


if __name__ == "__main__":
    main()
