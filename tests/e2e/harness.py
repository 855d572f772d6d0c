"""Real processes on loopback: a twistd running tcpfiles, and a blocking wire client.

Synchronisation is on events: the server's own log lines ("files listening on ..."), socket
reads and process exit, each bounded by a timeout; never on sleeps.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

BIN = Path(sys.executable).parent


def script(name: str) -> str:
    """An installed console script of this environment (twistd, tcpfiles)."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is not installed: run the README's test command"
    return found


def twistd_command(
    root: Path, listen: str = "tcp:0:interface=127.0.0.1", *twistd_options: str
) -> list[str]:
    """``twistd -n tcpfiles --root ROOT --listen LISTEN`` (without a pidfile)."""
    return [
        script("twistd"),
        "-n",
        "--pidfile=",
        *twistd_options,
        "tcpfiles",
        "--root",
        str(root),
        "--listen",
        listen,
    ]


class Twistd:
    """``twistd -n tcpfiles`` in a subprocess, listening on a free loopback port."""

    def __init__(
        self,
        root: Path,
        *extra: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        listen: str = "tcp:0:interface=127.0.0.1",
        nofile: tuple[int, int] | None = None,
        twistd_options: tuple[str, ...] = (),
    ) -> None:
        # twistd's own options (``--logger ...``) go before ``tcpfiles``, ``extra`` after it
        self.command = [*twistd_command(root, listen, *twistd_options), *extra]
        self.proc = subprocess.Popen(
            self.command,
            cwd=cwd or root.parent,
            env=env,
            # RLIMIT_NOFILE (soft, hard) for the server alone, e.g. to exhaust its descriptors
            preexec_fn=None
            if nofile is None
            else lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        match = self.wait_for(r"files listening on 127\.0\.0\.1:(\d+)")
        self.port = int(match.group(1))

    def port_of(self, label: str) -> int:
        """The port a listener logged (``chat listening on 127.0.0.1:N``, UDP too)."""
        match = self.wait_for(rf"{re.escape(label)} listening on (?:udp )?127\.0\.0\.1:(\d+)")
        return int(match.group(1))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace"))
        self._lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Block until a log line matches; fail with the log so far if it never does."""
        regex = re.compile(pattern)
        for line in self.log:
            if (m := regex.search(line)) is not None:
                return m
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"twistd exited waiting for {pattern!r}:\n{self.text()}")
            self.log.append(line)
            if (m := regex.search(line)) is not None:
                return m
        raise AssertionError(f"no log line matched {pattern!r} in {timeout} s:\n{self.text()}")

    def wait_count(self, pattern: str, count: int, timeout: float = 20.0) -> None:
        """Block until ``count`` log lines match (each line counted once)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while sum(1 for line in self.log if regex.search(line)) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"fewer than {count} lines matched {pattern!r}")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"twistd exited before {count} lines matched {pattern!r}")
            self.log.append(line)

    def text(self) -> str:
        """The log read so far."""
        return "".join(self.log)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the server, wait for it to exit, read the rest of its log; its return code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.log.append(line)
        return code

    def rss_kib(self, field: str = "VmRSS") -> int:
        """Resident memory of the server from /proc (VmRSS now, VmHWM the peak)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field} not in /proc/{self.proc.pid}/status")

    def assert_clean_log(self) -> None:
        """Nothing but orderly messages: no traceback, no unhandled error."""
        text = self.text()
        for bad in ("Traceback", "Unhandled", "CRITICAL"):
            assert bad not in text, f"{bad!r} in the server log:\n{text}"


class Wire:
    """A blocking client of the files protocol over a real socket, for e2e tests."""

    def __init__(self, port: int, timeout: float = 20.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError(f"server closed; buffered {self.buffer[:200]!r}")
        self.buffer += chunk

    def line(self) -> bytes:
        """The next line, without its LF."""
        while b"\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def exactly(self, n: int) -> bytes:
        """The next n bytes."""
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def sha256_of_next(self, n: int) -> str:
        """Read n bytes without keeping them; their sha256."""
        digest = hashlib.sha256()
        take = min(n, len(self.buffer))
        digest.update(self.buffer[:take])
        self.buffer = self.buffer[take:]
        n -= take
        view = bytearray(1 << 20)
        while n:
            got = self.sock.recv_into(view, min(n, len(view)))
            if not got:
                raise EOFError(f"server closed with {n} bytes to go")
            digest.update(view[:got])
            n -= got
        return digest.hexdigest()

    def get(self, path: str) -> bytes:
        """GET a file whole; fails on ERR."""
        self.send(f"GET {path}\n".encode())
        status = self.line()
        assert status.startswith(b"OK "), status
        return self.exactly(int(status.split()[1]))

    def at_eof(self) -> bool:
        """True when the server has closed (after what is buffered)."""
        if self.buffer:
            return False
        return self.sock.recv(1, socket.MSG_PEEK) == b""

    def close(self) -> None:
        self.sock.close()


def make_file(path: Path, size: int, seed: int = 0) -> str:
    """A file of ``size`` pseudo-random bytes (distinct in every MiB); its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left, counter = size, 0
        while left:
            block = hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 32768
            chunk = block[: min(left, len(block))]
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
            counter += 1
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll a condition that has no event to wait on (memory, /proc counters), bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def proc_io(pid: int, field: str = "wchar") -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/io")


__all__ = ["Twistd", "Wire", "make_file", "sha256_file", "script", "wait_until", "proc_io"]


@contextlib.contextmanager
def serving(root: Path) -> Iterator[Callable[..., Twistd]]:
    """``start(*extra, env=None, **kwargs)`` starts ``twistd -n tcpfiles`` on ``root``; each one
    started is stopped (SIGTERM) and its log checked clean at the end."""
    servers: list[Twistd] = []

    def start(*extra: str, env: dict[str, str] | None = None, **kwargs: str) -> Twistd:
        server = Twistd(root, *extra, env=env, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.stop()
        server.assert_clean_log()


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str = "",
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``tcpfiles ARGS`` to completion, without the caller's $TCPFILES_PASSWORD (plus ``env``)."""
    base = {k: v for k, v in os.environ.items() if k != "TCPFILES_PASSWORD"}
    return subprocess.run(
        [script("tcpfiles"), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        cwd=cwd,
        env={**base, **(env or {})},
    )
