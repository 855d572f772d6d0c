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


NGINX = "/usr/sbin/nginx"


def nginx_binary() -> str | None:
    """nginx's path (/usr/sbin/nginx, else on $PATH), or None when it is not installed."""
    return NGINX if os.access(NGINX, os.X_OK) else shutil.which("nginx")


def nginx_command(
    root: Path, port: int, workers: int = 1, access_log: bool = False, keepalive: int = 1_000_000
) -> list[str]:
    """nginx on 127.0.0.1:port serving ``root``: ``workers`` worker processes under a master,
    in the foreground (stop it by its PID: the master's), sendfile and tcp_nopush on,
    ``keepalive`` requests per connection, its config, pid file and logs in a directory of
    their own beside ``root`` (removed with it).  The access log is off unless asked for."""
    prefix = root.parent / f"nginx-{port}"
    (prefix / "logs").mkdir(parents=True)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = " ".join(f"{kind}_temp_path {prefix};" for kind in kinds)
    log = f"access_log {prefix}/logs/access.log;" if access_log else "access_log off;"
    (prefix / "nginx.conf").write_text(f"""
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;
events {{ worker_connections 4096; }}
http {{
    sendfile on; tcp_nopush on; {log}
    keepalive_requests {keepalive}; keepalive_timeout 60s;
    {temp}
    server {{ listen 127.0.0.1:{port} backlog=511; root {root}; }}
}}
""")
    binary = nginx_binary() or "nginx"
    return [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]


def pin(cpu: int | None) -> Callable[[], None]:
    """A preexec_fn (or a call) that keeps a process on one CPU; a no-op with one CPU."""
    if cpu is None or len(CPUS) < 2:
        return lambda: None
    return lambda: os.sched_setaffinity(0, {cpu})


def start_server(
    command: list[str],
    cwd: Path,
    port: int,
    pinned: bool = True,
    errors: Path | None = None,
    output: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server under test on the second CPU (anywhere unless ``pinned``), its output
    discarded (standard error kept in ``errors``, standard output in ``output``, if given);
    return once it listens."""
    with open(errors or os.devnull, "wb") as stderr, open(output or os.devnull, "wb") as stdout:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=pin(CPUS[1] if len(CPUS) > 1 and pinned else None),
        )
    try:
        wait_listening(port, proc, errors=errors)
    except BaseException:
        stop(proc)
        raise
    return proc


class ServerExited(SystemExit):
    """The server under test exited before it listened (a refused option, say)."""


def wait_listening(
    port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0, errors: Path | None = None
) -> None:
    """Until 127.0.0.1:port accepts a connection; exit if the server dies or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = errors.read_text(errors="replace").strip()[-2000:] if errors else ""
            raise ServerExited(
                f"server exited early: {proc.args}" + (f"\n  it said: {said}" if said else "")
            )
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
