"""What the bench scripts share: free loopback ports, installed tools, commands, peak RSS."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool(name: str) -> str:
    """A console script of this environment (twistd, tcpfiles), or exit saying what to do."""
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        sys.exit(f"{name} not found: install tcpfiles first (see README)")
    return found


def twistd(plugin: str, *options: str, port: int) -> list[str]:
    """``twistd -n PLUGIN OPTIONS --listen tcp:PORT:interface=127.0.0.1`` without a pidfile."""
    return [
        tool("twistd"),
        "-n",
        "--pidfile=",
        plugin,
        *options,
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
    ]


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")
