#!/usr/bin/env python3
"""What the PROXY layer of a ``haproxy:`` listener costs: server CPU per round trip and per
connection, echo behind the kernel's guard, plain ``tcp:`` against ``haproxy:tcp:``.

    python bench/proxy.py                 # 5 rounds, 20000 round trips, 3000 connections
    python bench/proxy.py --rounds 3 --trips 5000 --connections 1000
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python bench/proxy.py --memory proxy connections 3000   # instructions: no sockets

Each server is started fresh for each measurement (``--serve``: compose's echo on 127.0.0.1,
pinned to the second CPU), its CPU read from /proc before and after; the client sends a
version 1 header first on ``haproxy:`` listeners.  ``proxy-no-fast-path`` is ``haproxy:tcp:``
with tcpfiles.core.sending's look beneath the PROXY layer switched off (what the sendmsg and
read-size fast paths cost when they cannot see the socket).  Medians of the rounds, the order
rotating; every load is bounded in count.

``--memory MODE connections|trips N`` runs N connections (header, one line echoed, closed), or
N round trips on one connection, in memory (``StringTransport``, a fake clock): no sockets, no
scheduler, so ``valgrind --tool=callgrind`` counts the same instructions run after run; the
difference between two N, divided, is the cost of one.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import CPUS, cpu_seconds, pin

HEADER = b"PROXY TCP4 203.0.113.5 192.0.2.1 5555 8888\r\n"
MODES = ("plain", "proxy", "proxy-no-fast-path")


def serve(mode: str) -> None:
    """The server under test: echo, on a free port it prints, until terminated."""
    from twisted.internet import reactor

    import tcpfiles.core.sending as sending
    from tcpfiles.compose import Serve, make_service

    if mode == "proxy-no-fast-path":
        sending.ProxyProtocol = type("Never", (), {})  # type: ignore[misc,assignment]
    listen = "tcp:0:interface=127.0.0.1"
    if mode != "plain":
        listen = "haproxy:" + listen
    with tempfile.TemporaryDirectory() as root:
        top = make_service(reactor, root, [Serve("echo", [listen]), Serve("files", [])])
        top.startService()
        for child in top:
            if getattr(child, "address", None) and child.address():
                print(child.address().rsplit(":", 1)[1], flush=True)
        reactor.run()


def in_memory(mode: str, what: str, count: int) -> None:
    """``count`` connections, or ``count`` round trips on one, all in memory."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import MemoryReactorClock, StringTransport

    from tcpfiles.core.proxy import ProxyFactory, ProxySettings
    from tcpfiles.echo.plugin import echo as behaviour
    from tcpfiles.testing import build_guarded

    clock = MemoryReactorClock()
    factory: Any = build_guarded(behaviour, {}, clock=clock)
    header = b""
    if mode != "plain":
        factory, header = ProxyFactory(factory, clock, ProxySettings()), HEADER
    balancer = IPv4Address("TCP", "127.0.0.1", 40000)

    def connection() -> tuple[Any, StringTransport]:
        protocol = factory.buildProtocol(balancer)
        transport = StringTransport(peerAddress=balancer)
        protocol.makeConnection(transport)
        protocol.dataReceived(header + b"hi\n")
        return protocol, transport

    if what == "connections":
        for _ in range(count):
            connection()[0].connectionLost(None)
        return
    protocol, transport = connection()
    for _ in range(count):
        protocol.dataReceived(b"x" * 99 + b"\n")
        transport.clear()


def start(mode: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__)), "--serve", mode],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=pin(CPUS[1] if len(CPUS) > 1 else None),
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def connect(port: int, mode: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if mode != "plain":
        sock.sendall(HEADER)
    return sock


def echo(sock: socket.socket, message: bytes) -> None:
    sock.sendall(message)
    got = 0
    while got < len(message):
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed")
        got += len(chunk)


def measure(mode: str, trips: int, connections: int) -> tuple[float, float]:
    """Server CPU microseconds per round trip (100 bytes) and per connection (one line)."""
    proc, port = start(mode)
    try:
        sock = connect(port, mode)
        message = b"x" * 99 + b"\n"
        echo(sock, message)
        before = cpu_seconds(proc.pid)
        for _ in range(trips):
            echo(sock, message)
        per_trip = (cpu_seconds(proc.pid) - before) / trips * 1e6
        sock.close()
        before = cpu_seconds(proc.pid)
        for _ in range(connections):
            with connect(port, mode) as one:
                echo(one, b"hi\n")
        per_connection = (cpu_seconds(proc.pid) - before) / connections * 1e6
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return per_trip, per_connection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trips", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--memory", nargs=3, metavar=("MODE", "WHAT", "N"))
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.memory:
        in_memory(args.memory[0], args.memory[1], int(args.memory[2]))
        return
    pin(CPUS[0])()
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for n in range(args.rounds):
        for mode in MODES[n % len(MODES) :] + MODES[: n % len(MODES)]:
            results[mode].append(measure(mode, args.trips, args.connections))
    print("| listener | server CPU µs per round trip | per connection |")
    print("|---|---|---|")
    for mode, values in results.items():
        trip = statistics.median(v[0] for v in values)
        conn = statistics.median(v[1] for v in values)
        print(f"| {mode} | {trip:.1f} | {conn:.0f} |")


if __name__ == "__main__":
    main()
