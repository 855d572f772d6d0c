"""Reading a PROXY protocol header (HAProxy's, versions 1 and 2), strictly and in bounds.

:func:`read_header` is given what a connection has sent so far and says: not enough yet
(None), a :class:`Header`, or :class:`ProxyHeaderError` (garbage, too long, malformed).  It is
pure: the kernel's PROXY layer (:mod:`tcpfiles.core.proxy`) buffers and calls it, and so can a
test, a byte at a time.

Bounds: a version 1 header is at most 107 bytes, CRLF included (the specification's own
maximum); a version 2 header at most :data:`V2_MAX` bytes, so that a length field of 65535 is
refused at once rather than waited for.  Addresses are checked (a TCP4 line must carry IPv4
addresses, ports are decimal 0–65535) and normalised (``::ffff:1.2.3.4`` is ``1.2.3.4``).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from twisted.internet.address import IPv4Address, IPv6Address

__all__ = ["V1_MAX", "V2_MAX", "V2_SIGNATURE", "Header", "ProxyHeaderError", "read_header"]

#: The version 2 signature, the first 12 bytes of its header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The version 1 header starts so.
V1_START = b"PROXY "
#: Longest version 1 header, CRLF included (the specification's figure).
V1_MAX = 107
#: The first 12 bytes of an IPv4-mapped IPv6 address (``::ffff:1.2.3.4``).
_MAPPED = bytes(10) + b"\xff\xff"
#: Longest version 2 header accepted: 16 bytes, addresses (at most 216) and room for the
#: TLVs HAProxy may add (unique id, authority, TLS details).
V2_MAX = 1024


class ProxyHeaderError(ValueError):
    """Not a PROXY header, or a malformed or oversized one; the message says which."""


@dataclass(frozen=True)
class Header:
    """A complete header: ``size`` bytes long, and the client it names.

    ``source`` and ``destination`` are None when the header names no client: a version 2
    ``LOCAL`` (a balancer's health check), ``PROXY UNKNOWN``, or an address family other than
    IPv4/IPv6; the connection is then the balancer's own.  ``command`` says which, for logs.
    """

    size: int
    command: str
    source: IPv4Address | IPv6Address | None = None
    destination: IPv4Address | IPv6Address | None = None


def read_header(data: bytes) -> Header | None:
    """The header at the start of ``data``, or None if more bytes are needed to tell."""
    if data.startswith(V2_SIGNATURE):
        return _read_v2(data)
    if data.startswith(V1_START):
        return _read_v1(data)
    if V2_SIGNATURE.startswith(data) or V1_START.startswith(data):
        return None  # the start of one of them, so far
    raise ProxyHeaderError("no PROXY header")


def _read_v1(data: bytes) -> Header | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data:
            raise ProxyHeaderError(f"version 1 header longer than {V1_MAX} bytes or without CRLF")
        return None
    parts = data[:end].split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return Header(end + 2, "UNKNOWN")
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("malformed version 1 header")
    version = 4 if parts[1] == b"TCP4" else 6
    source = _address(parts[2], parts[4], version)
    destination = _address(parts[3], parts[5], version)
    return Header(end + 2, parts[1].decode("ascii"), source, destination)


def _address(host: bytes, port: bytes, version: int) -> IPv4Address | IPv6Address:
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    try:
        packed = socket.inet_pton(family, host.decode("ascii"))
    except (OSError, ValueError):  # not an address of that family; not ASCII, NUL inside
        raise ProxyHeaderError(f"malformed TCP{version} address in version 1 header") from None
    if not port.isdigit() or len(port) > 5 or int(port) > 65535:
        raise ProxyHeaderError("malformed port in version 1 header")
    return _made(packed, int(port))


def _made(packed: bytes, port: int) -> IPv4Address | IPv6Address:
    """Twisted's address for the packed ``ip``, in its usual spelling; an IPv4-mapped IPv6
    address as the IPv4 one, so that a client counts the same (per-peer limits, failed
    logins) whichever way it was given.  (``socket``, not ``ipaddress``: a tenth of the cost.)"""
    if len(packed) == 16 and packed[:12] == _MAPPED:
        packed = packed[12:]
    if len(packed) == 4:
        return IPv4Address("TCP", socket.inet_ntop(socket.AF_INET, packed), port)
    return IPv6Address("TCP", socket.inet_ntop(socket.AF_INET6, packed), port)


def _read_v2(data: bytes) -> Header | None:
    if len(data) < 16:
        return None
    size = 16 + int.from_bytes(data[14:16], "big")
    if size > V2_MAX:
        raise ProxyHeaderError(f"version 2 header of {size} bytes (at most {V2_MAX})")
    if len(data) < size:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2 or command > 1:
        raise ProxyHeaderError(f"unsupported version 2 header (version {version}, {command=})")
    if command == 0:
        return Header(size, "LOCAL")
    family, transport = data[13] >> 4, data[13] & 0x0F
    body = data[16:size]
    if family == 1:
        shape, length = "!4s4sHH", 12
    elif family == 2:
        shape, length = "!16s16sHH", 36
    elif family in (0, 3):  # UNSPEC, UNIX: no client address to take
        return Header(size, "UNSPEC" if family == 0 else "UNIX")
    else:
        raise ProxyHeaderError(f"unknown address family {family} in version 2 header")
    if transport != 1:  # not a stream: nothing a stream server could take
        return Header(size, f"transport {transport}")
    if len(body) < length:
        raise ProxyHeaderError("version 2 header too short for its addresses")
    source, destination, sport, dport = struct.unpack(shape, body[:length])
    name = "TCP4" if family == 1 else "TCP6"
    return Header(size, name, _made(source, sport), _made(destination, dport))
