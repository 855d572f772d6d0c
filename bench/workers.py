#!/usr/bin/env python3
"""How ``twistd tcpfiles --workers N`` spreads connections, and what killing a worker costs.

    python bench/workers.py [--workers N] [--sequential 200] [--concurrent 32x100]
                            [--kill-during 3000]

Starts ``twistd -n tcpfiles --workers N`` on 127.0.0.1 serving one 6-byte file and prints: how
many of S sequential GETs (one connection each) each worker answered (from the log's ``[worker
K ...]`` marks; the issue's target for 2 workers is each within 40/60); the same for C clients
doing R GETs each at once; then, while one client connects again and again, SIGKILL to worker 1
after a third of the connections: how many were refused (the target: none), how many were lost
(accepted by the killed worker, unanswered) and how long the parent took to start another.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import free_port, stop, tool, wait_listening

SERVED = re.compile(rb"\[worker (\d+) tcpfiles\.files#info\] .* GET ")


def get(port: int) -> str:
    """One connection, one GET: ``ok``, ``refused`` or ``lost``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET a.txt\n")
            data = b""
            while len(data) < 11:
                chunk = sock.recv(64)
                if not chunk:
                    break
                data += chunk
            return "ok" if data == b"OK 6\nhello\n" else "lost"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "lost"


def served(log: Path, since: int) -> tuple[collections.Counter[str], int]:
    """Requests per worker logged after byte ``since``; and the log's size now."""
    data = log.read_bytes()
    return collections.Counter(m.group(1).decode() for m in SERVED.finditer(data[since:])), len(
        data
    )


def settle(log: Path, since: int, count: int) -> collections.Counter[str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        counts, _ = served(log, since)
        if sum(counts.values()) >= count:
            return counts
        time.sleep(0.05)
    return served(log, since)[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--concurrent", default="32x100")
    parser.add_argument("--kill-during", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        (root / "a.txt").write_bytes(b"hello\n")
        log = Path(tmp) / "log"
        port = free_port()
        command = [tool("twistd"), "-n", "--pidfile=", "tcpfiles", "--root", str(root)]
        command += ["--listen", f"tcp:{port}:interface=127.0.0.1", "--workers", str(args.workers)]
        with open(log, "wb") as out:
            proc = subprocess.Popen(command, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_listening(port, proc)
            mark = served(log, 0)[1]
            for _ in range(args.sequential):
                assert get(port) == "ok"
            counts = settle(log, mark, args.sequential)
            print(f"{args.sequential} sequential: {dict(sorted(counts.items()))}")

            clients, each = (int(n) for n in args.concurrent.split("x"))
            mark = served(log, 0)[1]
            outcomes: collections.Counter[str] = collections.Counter()

            def client() -> None:
                for _ in range(each):
                    outcomes[get(port)] += 1

            threads = [threading.Thread(target=client) for _ in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            counts = settle(log, mark, clients * each)
            print(f"{clients}x{each} concurrent: {dict(sorted(counts.items()))} {dict(outcomes)}")

            pids = re.findall(rb"started worker 1 \(pid (\d+)\)", log.read_bytes())
            victim = int(pids[-1])
            outcomes = collections.Counter()
            killed_at = 0.0
            for n in range(args.kill_during):
                if n == args.kill_during // 3:
                    os.kill(victim, signal.SIGKILL)
                    killed_at = time.monotonic()
                outcomes[get(port)] += 1
            text = log.read_bytes()
            respawn = re.search(rb"started worker 1 \(pid (\d+)\)", text[text.find(b"SIGKILL") :])
            print(
                f"SIGKILL to worker 1 during {args.kill_during} sequential: {dict(outcomes)}; "
                f"replaced: {bool(respawn)} (kill at {killed_at:.1f})"
            )
        finally:
            stop(proc)


if __name__ == "__main__":
    sys.exit(main())
