"""udp-echo in a real twistd: spoofed datagrams cannot make it loop, and it keeps answering.

Spoofing a source needs a raw socket and counting datagrams between two servers needs a packet
socket, so these tests run as root only (skipped with the reason otherwise).
"""

from __future__ import annotations

import re
import socket
import time
import unittest

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Twistd
from tests.e2e.udpraw import Sniffer, can_spoof, spoof

HOST = "127.0.0.1"
REPORT = re.compile(r"udp-echo dropped (\d+) datagrams \((\d+) rate, (\d+) looped, (\d+) failed\)")


def serve_udp_echo(start_server, *options: str) -> tuple[Twistd, int]:
    """A twistd with udp-echo on a free loopback port, reporting drops every 0.2 s."""
    server = start_server(
        "--serve", f"udp-echo=udp:0:interface={HOST}", "--udp-echo-log-interval", "0.2", *options
    )
    return server, server.port_of("udp-echo")


def drops(server: Twistd) -> dict[str, int]:
    """Drops reported in the server's log so far, summed by reason."""
    found = [REPORT.search(line) for line in server.log]
    counts = [tuple(int(n) for n in m.groups()[1:]) for m in found if m is not None]
    return {
        reason: sum(c[i] for c in counts) for i, reason in enumerate(("rate", "looped", "failed"))
    }


def wait_drops(server: Twistd, reason: str, at_least: int, timeout: float = 20.0) -> dict[str, int]:
    """Block until the reports add up to ``at_least`` drops for ``reason``; all the counts."""
    deadline = time.monotonic() + timeout
    while (counts := drops(server))[reason] < at_least:
        lines = sum(1 for line in server.log if REPORT.search(line))
        server.wait_count(REPORT.pattern, lines + 1, timeout=max(0.0, deadline - time.monotonic()))
    return counts


def probe(port: int, sniffer: Sniffer) -> None:
    """An ordinary client is answered, and the sniffer has counted everything up to the answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(10)
        client.bind((HOST, 0))
        client.sendto(b"still there?", (HOST, port))
        assert client.recvfrom(100) == (b"still there?", (HOST, port))
        sniffer.wait_for((port, client.getsockname()[1]))


@unittest.skipIf(can_spoof() is not None, str(can_spoof()))
class UdpEchoLoopTests(E2ETestCase):
    """udp-echo against spoofed datagrams in a real twistd (root only)."""

    def test_two_servers_pointed_at_each_other_stop_bouncing(self) -> None:
        """One datagram spoofed from server B to server A bounces ~2x A's burst, then stops."""
        # defaults: 100 replies/s, burst 200, per address
        a, port_a = serve_udp_echo(self.start_server)
        # A runs dry first
        b, port_b = serve_udp_echo(self.start_server, "--udp-echo-peer-rate", "1000")
        sniffer = Sniffer({port_a, port_b})
        try:
            spoof((HOST, port_b), (HOST, port_a), b"ping-pong")
            counts = wait_drops(a, "rate", 1)
            probe(port_a, sniffer)
            bounced = sniffer.between(port_a, port_b)
            # the crafted one, 200 replies from A (its burst), 200 from B; a little refill at most
            assert 401 <= bounced <= 1000, bounced
            probe(port_b, sniffer)
            assert sniffer.between(port_a, port_b) == bounced, "the loop went on"
            passed, missed = sniffer.kernel_count()
            assert missed == 0 and passed == sum(sniffer.seen.values()), (passed, missed)
        finally:
            sniffer.close()
        assert counts["looped"] == 0 and drops(b) == {"rate": 0, "looped": 0, "failed": 0}

    def test_datagrams_from_itself_or_a_service_port_are_dropped(self) -> None:
        """20 datagrams "from itself" and 2 from ports 7 and 0: no reply, counted;
        clients answered."""
        server, port = serve_udp_echo(self.start_server)
        sniffer = Sniffer({port})
        try:
            for _ in range(20):
                spoof((HOST, port), (HOST, port), b"from myself")
            spoof((HOST, 7), (HOST, port), b"from echo")
            spoof(("127.0.0.2", 0), (HOST, port), b"from port 0")
            counts = wait_drops(server, "looped", 22)
            probe(port, sniffer)
            sent_by_server = {pair: n for pair, n in sniffer.seen.items() if pair[0] == port}
            assert sent_by_server.pop((port, port)) == 20  # the spoofed ones: no reply among them
            assert list(sent_by_server.values()) == [1]  # the answer to the probe
        finally:
            sniffer.close()
        assert counts == {"rate": 0, "looped": 22, "failed": 0}
