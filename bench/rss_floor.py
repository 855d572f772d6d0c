#!/usr/bin/env python3
"""How much of a tcpfiles server's memory is twistd's own: idle RSS of three servers.

    python bench/rss_floor.py

Starts, one after another on 127.0.0.1: twistd with a plugin that does nothing (the floor any
twistd plugin pays), twistd tcpfiles, and twistd web; each is asked for one small file (not the
no-op one) and its peak RSS (VmHWM) is printed.  Every wait is bounded.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BIN, free_port, peak_rss_mib, twistd

NOOP_PLUGIN = """from twisted.application.service import ServiceMaker
noop = ServiceMaker("noop", "tcpfiles_bench_noop_tap", "nothing", "tcpfiles-bench-noop")
"""
NOOP_TAP = """from twisted.application import service
from twisted.python import usage
class Options(usage.Options):
    pass
def makeService(options):
    return service.MultiService()
"""


def measure(
    command: list[str], env: dict[str, str] | None, cwd: Path, port: int | None, request: bytes
) -> float:
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        for line in proc.stdout:  # wait for twistd's "starting up" / listening line
            if (
                "listening on" in line
                or "Site starting" in line
                or (port is None and "reactor class" in line)
            ):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no start line from {command}")
        if port is not None:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(request)
                while sock.recv(65536):
                    pass
        else:
            time.sleep(1)  # the no-op server has nothing to wait on: let it settle
        return peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Takes no options; prints peak RSS in MiB."
    ).parse_args()
    with tempfile.TemporaryDirectory(prefix="tcpfiles-rss-") as tmp:
        base = Path(tmp)
        (base / "twisted" / "plugins").mkdir(parents=True)
        (base / "twisted" / "plugins" / "tcpfiles_bench_noop.py").write_text(NOOP_PLUGIN)
        (base / "tcpfiles_bench_noop_tap.py").write_text(NOOP_TAP)
        root = base / "files"
        root.mkdir()
        (root / "a.txt").write_bytes(b"x" * 1000)
        env = {"PYTHONPATH": str(base), "PATH": str(BIN)}
        noop = measure(
            [str(BIN / "twistd"), "-n", "--pidfile=", "tcpfiles-bench-noop"], env, base, None, b""
        )
        port = free_port()
        files = measure(
            twistd("tcpfiles", "--root", str(root), port=port),
            None,
            base,
            port,
            b"GET a.txt\nQUIT\n",
        )
        port = free_port()
        web = measure(
            twistd("web", "--path", str(root), port=port),
            None,
            base,
            port,
            b"GET /a.txt HTTP/1.0\r\n\r\n",
        )
    print(f"peak RSS, MiB (Python {sys.version.split()[0]})")
    print(f"  twistd, no-op plugin  {noop:6.1f}   the floor")
    print(f"  twistd tcpfiles       {files:6.1f}   floor + {files - noop:.1f}")
    print(f"  twistd web            {web:6.1f}   floor + {web - noop:.1f}")


if __name__ == "__main__":
    main()
