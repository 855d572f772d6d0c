"""Spoofed datagrams and a packet counter on loopback, for udp-echo's loop tests (root only).

:func:`spoof` sends a UDP datagram with any source address and port through a raw socket
(``IPPROTO_RAW``: we build the IPv4 and UDP headers).  :class:`Sniffer` counts the UDP datagrams
between given ports on ``lo`` with an ``AF_PACKET`` socket, so a test can see replies that no
socket of its own receives (two servers bouncing a datagram between them).
"""

from __future__ import annotations

import ctypes
import os
import queue
import socket
import struct
import threading
import time
from collections import Counter

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26
SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # BPF ancillary load: the packet's direction

# classic BPF opcodes
LD_W_ABS, LD_H_IND, LD_B_ABS, LDX_B_MSH = 0x20, 0x48, 0x30, 0xB1
JEQ_K, RET_K = 0x15, 0x06


def can_spoof() -> str | None:
    """Why spoofing is impossible here, or None when it is (root with raw sockets)."""
    if os.geteuid() != 0:
        return "spoofing a datagram's source needs a raw socket: run the tests as root"
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
        socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP)).close()
    except OSError as exc:
        return f"raw or packet sockets refused ({exc}): no CAP_NET_RAW?"
    return None


def udp_packet(source: tuple[str, int], destination: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 header (checksum left to the kernel) and a UDP header (no checksum), then data."""
    length = 20 + 8 + len(payload)
    ip_header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,  # version 4, 5 words of header
        0,
        length,
        0,  # id: filled in by the kernel
        0x4000,  # don't fragment
        64,  # ttl
        socket.IPPROTO_UDP,
        0,  # checksum: filled in by the kernel
        socket.inet_aton(source[0]),
        socket.inet_aton(destination[0]),
    )
    udp_header = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0)
    return ip_header + udp_header + payload


def spoof(source: tuple[str, int], destination: tuple[str, int], payload: bytes) -> None:
    """Send one datagram to ``destination`` that claims to come from ``source``."""
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(udp_packet(source, destination, payload), (destination[0], 0))


def port_filter(ports: list[int]) -> list[tuple[int, int, int, int]]:
    """Classic BPF: arriving (not leaving) UDP/IPv4 packets from or to one of ``ports``."""
    NEXT, DROP, ACCEPT = "next", "drop", "accept"
    program: list[tuple[int, str, str, int]] = [
        (LD_W_ABS, NEXT, NEXT, SKF_AD_PKTTYPE),
        (JEQ_K, DROP, NEXT, PACKET_OUTGOING),
        (LD_B_ABS, NEXT, NEXT, 9),  # IPv4 protocol
        (JEQ_K, NEXT, DROP, socket.IPPROTO_UDP),
        (LDX_B_MSH, NEXT, NEXT, 0),  # X = IPv4 header length
    ]
    for offset in (0, 2):  # source port, then destination port
        program.append((LD_H_IND, NEXT, NEXT, offset))
        program += [(JEQ_K, ACCEPT, NEXT, port) for port in ports]
    labels = {DROP: len(program), ACCEPT: len(program) + 1}
    program += [(RET_K, NEXT, NEXT, 0), (RET_K, NEXT, NEXT, 0x40000)]

    def jump(here: int, label: str) -> int:
        return 0 if label == NEXT else labels[label] - here - 1

    return [(code, jump(i, jt), jump(i, jf), k) for i, (code, jt, jf, k) in enumerate(program)]


class Sniffer:
    """Counts UDP datagrams on ``lo`` whose source or destination port is one of ``ports``.

    A BPF filter in the kernel keeps only those datagrams, so :meth:`kernel_count` is exact even
    when this thread cannot keep up (the datagrams it read are in :attr:`seen`).
    """

    def __init__(self, ports: set[int]) -> None:
        self.ports = ports
        self.seen: Counter[tuple[int, int]] = Counter()
        self.events: queue.Queue[tuple[int, int]] = queue.Queue()
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)  # nothing yet
        self._filter = self._attach(sorted(ports))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        self.sock.bind(("lo", ETH_P_IP))  # from now on, filtered
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _attach(self, ports: list[int]) -> ctypes.Array[ctypes.c_char]:
        """Attach :func:`port_filter`; the returned buffer must live as long as the socket."""
        code = b"".join(struct.pack("HBBI", *line) for line in port_filter(ports))
        buffer = ctypes.create_string_buffer(code, len(code))
        program = struct.pack("HL", len(code) // 8, ctypes.addressof(buffer))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
        return buffer

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                packet, address = self.sock.recvfrom(128)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] == PACKET_OUTGOING:  # lo shows each packet leaving and arriving
                continue
            ports = self._udp_ports(packet)
            if ports is not None and (ports[0] in self.ports or ports[1] in self.ports):
                self.seen[ports] += 1
                self.events.put(ports)

    @staticmethod
    def _udp_ports(packet: bytes) -> tuple[int, int] | None:
        """(source port, destination port) of a UDP/IPv4 packet, else None."""
        if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
            return None
        start = (packet[0] & 0x0F) * 4
        source, destination = struct.unpack("!HH", packet[start : start + 4])
        return source, destination

    def wait_for(self, ports: tuple[int, int], timeout: float = 20.0) -> None:
        """Block until a datagram from ports[0] to ports[1] is seen (all before it are counted)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                if self.events.get(timeout=left) == ports:
                    return
            except queue.Empty:
                break
        raise AssertionError(f"no datagram {ports} seen on lo in {timeout} s; saw {self.seen}")

    def between(self, a: int, b: int) -> int:
        """Datagrams seen from a to b and from b to a."""
        return self.seen[(a, b)] + self.seen[(b, a)] if a != b else self.seen[(a, a)]

    def kernel_count(self) -> tuple[int, int]:
        """Datagrams the filter let through, and how many of them this socket could not hold.

        Both count since the previous call (the kernel resets them when asked).
        """
        stats = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("II", stats)
        return packets, drops

    def close(self) -> None:
        """Stop counting."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
