#!/usr/bin/env python3
"""Password guessing from many loopback addresses: how many guesses the server refuses.

    python bench/logins.py                             # 80,000 guesses, 4 from each of 20,000
    python bench/logins.py --addresses 2000 --per-address 4

A fresh ``twistd tcpfiles --auth memory:alice:...`` on 127.0.0.1; every connection binds its
source to its own address in 127.0.0.0/8 (all loopback; 127.1.0.1, 127.1.0.2, ...), sends
``--per-address`` wrong ``LOGIN alice ...`` lines and reads each answer.  Printed: guesses sent,
answered ``ERR unauthorized`` (checked), answered ``ERR busy`` (refused by the limiter), the
time, and the server's RSS before and after.  ``--in-process`` drives a ``LoginLimiter`` the same
way instead (as the server does: ask, and count a failure when not refused) and prints how many
keys it tracks and the memory it holds (tracemalloc).  Bounded in count (``--addresses`` x
``--per-address``) and time (``--seconds``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from common import free_port, rss_mib, start_server, stop, twistd


def source(index: int) -> str:
    """The index-th source address: 127.1.0.1 upwards, skipping .0 and .255."""
    index, low = divmod(index, 254)
    index, mid = divmod(index, 256)
    return f"127.{1 + index}.{mid}.{1 + low}"


async def guesses(port: int, address: str, count: int, tally: dict[str, int]) -> None:
    """One connection from ``address``: ``count`` wrong passwords for alice, answers tallied."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    except OSError:
        tally["connect-failed"] += 1
        return
    try:
        for n in range(count):
            writer.write(f"LOGIN alice guess-{address}-{n}\n".encode())
            line = await reader.readline()
            if line.startswith(b"ERR unauthorized"):
                tally["checked"] += 1
            elif line.startswith(b"ERR busy"):
                tally["refused"] += 1
            else:
                tally["other"] += 1
    finally:
        writer.close()


async def run(port: int, addresses: int, per_address: int, width: int, seconds: float) -> dict:
    tally = {"checked": 0, "refused": 0, "other": 0, "connect-failed": 0}
    queue = iter(range(addresses))
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        for index in queue:
            if time.monotonic() > deadline:
                return
            await guesses(port, source(index), per_address, tally)

    await asyncio.gather(*(worker() for _ in range(width)))
    return tally


def in_process(addresses: int, per_address: int) -> str:
    """The same guesses straight into a LoginLimiter on a fake clock (1 ms per guess)."""
    import inspect
    import tracemalloc

    from tcpfiles.core.auth import LoginLimiter

    now = [0.0]
    limiter = LoginLimiter(lambda: now[0])
    takes_account = len(inspect.signature(limiter.wait).parameters) > 1  # after issue 10
    refused = 0
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for index in range(addresses):
        who = (source(index), "alice") if takes_account else (source(index),)
        for _ in range(per_address):
            now[0] += 0.001
            if limiter.wait(*who):
                refused += 1
            else:
                limiter.failed(*who)
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    keys = len(limiter) if hasattr(limiter, "__len__") else len(limiter._failures)  # type: ignore[attr-defined]
    return (
        f"in process: {addresses * per_address} guesses for one account from {addresses} "
        f"addresses over {now[0]:.0f} s: {refused} refused; {keys} keys tracked, "
        f"{held / 2**20:.1f} MiB held"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--addresses", type=int, default=20_000)
    parser.add_argument("--per-address", type=int, default=4)
    parser.add_argument("--width", type=int, default=32, help="connections at once")
    parser.add_argument("--seconds", type=float, default=120.0, help="stop after this long")
    parser.add_argument("--in-process", action="store_true", help="drive a LoginLimiter only")
    args = parser.parse_args()
    if args.addresses > 254 * 256 * 100:
        sys.exit("at most 6,502,400 addresses")
    if args.in_process:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        print(in_process(args.addresses, args.per_address))
        return
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        command = twistd(
            "tcpfiles", "--root", tmp, "--auth", "memory:alice:the-password", port=port
        )
        proc = start_server(command, Path(tmp), port)
        try:
            before = rss_mib(proc.pid)
            started = time.monotonic()
            tally = asyncio.run(
                run(port, args.addresses, args.per_address, args.width, args.seconds)
            )
            took = time.monotonic() - started
            after = rss_mib(proc.pid)
        finally:
            stop(proc)
    sent = tally["checked"] + tally["refused"] + tally["other"]
    print(
        f"{sent} guesses for one account from {args.addresses} addresses in {took:.1f} s: "
        f"{tally['checked']} checked, {tally['refused']} refused (ERR busy), "
        f"{tally['other']} other, {tally['connect-failed']} connections failed; "
        f"server RSS {before:.1f} -> {after:.1f} MiB ({after - before:+.1f})"
    )


if __name__ == "__main__":
    main()
