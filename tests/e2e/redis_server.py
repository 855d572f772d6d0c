"""A redis-server the test starts on a free loopback port, with nothing saved, stopped by PID."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from unittest import SkipTest

from tests.external import require_binary

__all__ = ["RedisServer", "require_redis"]


def require_redis() -> str:
    """redis-server's path, and txredisapi (the ``redis`` extra); skip (or fail in CI)."""
    path = require_binary("redis-server")
    if importlib.util.find_spec("txredisapi") is None:
        if os.environ.get("TCPFILES_REQUIRE_EXTERNAL") == "1":
            raise AssertionError("txredisapi is not installed (pip install -e '.[test]')")
        raise SkipTest("txredisapi is not installed (the redis extra)")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """``redis-server --port P --bind 127.0.0.1 --save '' --appendonly no`` in ``directory``."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.binary = require_redis()
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Start it and wait until it answers PING."""
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not answer on {self.port} in {timeout} s")

    def pid(self) -> int:
        """Its process id (it runs)."""
        assert self.proc is not None and self.proc.poll() is None, "redis-server is not running"
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM by PID, and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.proc = None
