"""What the bench scripts share: loopback ports, installed tools, commands, CPUs, memory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent
#: The CPUs this process may use: the driver takes the first, the server under test the second.
CPUS = sorted(os.sched_getaffinity(0))


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


def twistd(plugin: str, *options: str, port: int, kind: str = "tcp", extra: str = "") -> list[str]:
    """``twistd -n PLUGIN OPTIONS --listen KIND:PORT:interface=127.0.0.1EXTRA``, no pidfile."""
    return [
        tool("twistd"),
        "-n",
        "--pidfile=",
        plugin,
        *options,
        "--listen",
        f"{kind}:{port}:interface=127.0.0.1{extra}",
    ]


def pin(cpu: int | None) -> Callable[[], None]:
    """A preexec_fn (or a call) that keeps a process on one CPU; a no-op with one CPU."""
    if cpu is None or len(CPUS) < 2:
        return lambda: None
    return lambda: os.sched_setaffinity(0, {cpu})


def start_server(command: list[str], cwd: Path, port: int) -> subprocess.Popen[bytes]:
    """Start a server under test on the second CPU, output discarded; return once it listens."""
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pin(CPUS[1] if len(CPUS) > 1 else None),
    )
    try:
        wait_listening(port, proc)
    except BaseException:
        stop(proc)
        raise
    return proc


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until 127.0.0.1:port accepts a connection; exit if the server dies or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited early: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"server did not listen within {timeout} s: {proc.args}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s: only the process we started."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def _tree(pid: int) -> list[str]:
    """The /proc directory of a process and of each of its descendants still alive."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            stack.extend(_children(current))
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.append(f"/proc/{current}")
    return found


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (nginx's worker), MiB."""
    total = 0.0
    for proc in _tree(pid):
        try:
            for line in Path(f"{proc}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for localhost (the benches do not verify it)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "bench-cert.pem", directory / "bench-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by a process and its children (nginx's worker)."""
    total = 0.0
    for proc in _tree(pid):
        try:
            fields = Path(f"{proc}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total
