#!/usr/bin/env python3
"""What one abusive client costs everyone else: a probe's worst answer while others flood.

    python bench/abuse.py [--flooders N] [--seconds S] [--pythonpath DIR]

Starts ``twistd tcpfiles`` (files and chat) on 127.0.0.1 and runs two scenarios, each bounded in
time: N files clients pipelining 64 KiB of empty lines as fast as they can (reading a little,
through a 4 KiB receive buffer), and N chat members sending 64 KiB of empty lines.  Meanwhile a
probe sends ``HELP`` to the files service every 10 ms and times the answers.  Printed: the probe's
median and worst answer, the server's CPU share, and the number of log lines it wrote.  With
``--pythonpath`` the server runs another checkout's code (e.g. an older commit exported with
``git archive``), for a before/after figure in the same run.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common import cpu_seconds, free_port, stop, tool, wait_listening


def flood(port: int, until: float, greeting: bytes) -> None:
    """Send 64 KiB of newlines at a time until ``until``; read only what fits 4 KiB."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(1)
        sock.sendall(greeting)
        while time.monotonic() < until:
            try:
                sock.sendall(b"\n" * 65536)
            except OSError:
                return


def probe(port: int, until: float) -> list[float]:
    """HELP every 10 ms until ``until``; the seconds each answer took."""
    times = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(60)
        answers = sock.makefile("rb")
        while time.monotonic() < until:
            started = time.monotonic()
            sock.sendall(b"HELP\n")
            count = int(answers.readline().split()[1])
            for _ in range(count):
                answers.readline()
            times.append(time.monotonic() - started)
            time.sleep(0.01)
    return times


def scenario(name: str, args: argparse.Namespace, target: str, greeting: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="tcpfiles-abuse-") as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        files, chat = free_port(), free_port()
        log = Path(tmp) / "twistd.log"
        command = [
            tool("twistd"),
            "-n",
            "--pidfile=",
            f"--logfile={log}",
            "tcpfiles",
            "--root",
            str(root),
            "--listen",
            f"tcp:{files}:interface=127.0.0.1",
            "--serve",
            f"chat=tcp:{chat}:interface=127.0.0.1",
        ]
        env = dict(os.environ, PYTHONPATH=args.pythonpath) if args.pythonpath else None
        server = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.DEVNULL)
        try:
            wait_listening(files, server)
            wait_listening(chat, server)
            port = files if target == "files" else chat
            started, cpu_before = time.monotonic(), cpu_seconds(server.pid)
            until = started + args.seconds
            flooders = [
                threading.Thread(target=flood, args=(port, until, greeting))
                for _ in range(args.flooders)
            ]
            for thread in flooders:
                thread.start()
            times = sorted(probe(files, until))
            for thread in flooders:
                thread.join(timeout=30)
            share = (cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - started)
        finally:
            stop(server)
        lines = log.read_text(errors="replace").count("\n")
    print(
        f"{name:<34} probe HELP median {times[len(times) // 2] * 1000:7.1f} ms, "
        f"worst {times[-1] * 1000:8.1f} ms ({len(times)} probes); server CPU {share:4.0%}; "
        f"log {lines} lines"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flooders", type=int, default=2, help="abusive clients (default 2)")
    parser.add_argument("--seconds", type=float, default=6.0, help="each scenario (default 6)")
    parser.add_argument("--pythonpath", help="run the server with this PYTHONPATH")
    args = parser.parse_args()
    args.seconds = min(args.seconds, 60.0)  # bounded, whatever is asked
    scenario(f"files: {args.flooders} pipelining newlines", args, "files", b"")
    scenario(f"chat: {args.flooders} sending newlines", args, "chat", b"/nick flood\n")


if __name__ == "__main__":
    main()
