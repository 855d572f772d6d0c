"""How many times one spoofed datagram bounces between two udp-echo servers (root, loopback).

Starts two ``twistd tcpfiles --serve udp-echo=udp:0:interface=127.0.0.1``, sends one datagram to
A that claims to come from B's port, and counts the datagrams between the two ports on ``lo`` for
``--seconds``.  ``--pythonpath DIR`` runs another checkout's code (e.g. an old one, to compare):

    python bench/udp_loop.py --seconds 2
    python bench/udp_loop.py --seconds 2 --from-itself     # 20 datagrams "from itself" instead
    git archive main tcpfiles twisted | tar -x -C /tmp/old && python bench/udp_loop.py \
        --pythonpath /tmp/old
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import Twistd  # noqa: E402
from tests.e2e.udpraw import Sniffer, can_spoof, spoof  # noqa: E402


def main() -> int:
    """Run the measurement; print one line of figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--pythonpath", help="import tcpfiles from this directory instead")
    parser.add_argument(
        "--from-itself",
        action="store_true",
        help="one server, 20 datagrams spoofed from its own port; its CPU seconds too",
    )
    args = parser.parse_args()
    if (why := can_spoof()) is not None:
        print(why, file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        serve = ("--serve", "udp-echo=udp:0:interface=127.0.0.1")
        servers = [Twistd(root, *serve, env=env) for _ in range(1 if args.from_itself else 2)]
        try:
            ports = [server.port_of("udp-echo") for server in servers]
            port_a, port_b = ports[0], ports[-1]
            sniffer = Sniffer(set(ports))
            cpu = cpu_seconds(servers[0].proc.pid)
            for _ in range(20 if args.from_itself else 1):
                spoof(("127.0.0.1", port_b), ("127.0.0.1", port_a), b"ping-pong")
            time.sleep(args.seconds)
            cpu = cpu_seconds(servers[0].proc.pid) - cpu
            bounced, lost = sniffer.kernel_count()
            sniffer.close()
        finally:
            for server in servers:
                server.stop()
    print(
        f"code={args.pythonpath or 'this checkout'} seconds={args.seconds:g} "
        f"{'from itself' if args.from_itself else 'two servers'}: datagrams={bounced} "
        f"(kernel count; {lost} unread by the sniffer), server A CPU {cpu:.2f} s"
    )
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
