"""Chat flood control against a real twistd: a member toggling /nick cannot flood the room.

Also a measurement script (same code as the test), on loopback only::

    python tests/e2e/test_chat_flood_e2e.py            # prints bytes a passive member received

Run it with ``PYTHONPATH=<another checkout>`` to measure that checkout's server the same way.
"""

from __future__ import annotations

import selectors
import socket
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # run as a script: make ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Twistd

MEMBERS = 50
TOGGLE_SECONDS = 2.0
DRAIN_TIMEOUT = 60.0  # the test's bound; as a script, 300 s (an unprotected server lags far)
QUIT_LINE = b" left (quit)"  # the toggler leaving, under whichever nick it holds


class Member:
    """A non-blocking chat connection that reads (and counts) everything it is sent."""

    def __init__(self, port: int, nick: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.sock.sendall(f"/nick {nick}\n".encode())
        self.buffer = b""
        self.received = 0
        while b"*** welcome" not in self.buffer:
            self._take(self.sock.recv(65536))
        self.sock.setblocking(False)

    def _take(self, chunk: bytes) -> None:
        if not chunk:
            raise EOFError(f"server closed; buffered {self.buffer[-200:]!r}")
        self.received += len(chunk)
        self.buffer = (self.buffer + chunk)[-4096:]  # keep only the tail, to find markers

    def read(self) -> None:
        """Take whatever is waiting."""
        try:
            while chunk := self.sock.recv(1 << 20):
                self._take(chunk)
                if len(chunk) < 1 << 20:
                    return
        except BlockingIOError:
            return
        raise EOFError("server closed")


def toggle_nicks(port: int, drain_timeout: float = DRAIN_TIMEOUT) -> dict[str, int]:
    """50 members join; one toggles /nick as fast as it can for 2 s, then quits.

    Everyone reads everything.  Returns the bytes the passive member received from the first
    toggle until it saw the toggler leave, and how many /nick lines the toggler sent.
    """
    members = [Member(port, f"m{n:02d}") for n in range(MEMBERS - 2)]
    passive = Member(port, "passive")
    toggler = Member(port, "toggler")
    everyone = [*members, passive, toggler]
    selector = selectors.DefaultSelector()
    for member in everyone:
        selector.register(member.sock, selectors.EVENT_READ, member)
    try:
        passive.read()
        start_bytes, sent = passive.received, 0
        pending = b""
        deadline = time.monotonic() + TOGGLE_SECONDS
        toggler.sock.setblocking(False)
        while time.monotonic() < deadline:
            if not pending:
                pending = b"/nick toggled\n/nick toggler\n" * 64
                sent += 128
            try:
                pending = pending[toggler.sock.send(pending) :]
            except BlockingIOError:
                pass
            for key, _ in selector.select(timeout=0):
                key.data.read()
        toggler.sock.setblocking(True)
        toggler.sock.sendall(pending + b"/quit\n")
        toggler.sock.setblocking(False)
        drain_deadline = time.monotonic() + drain_timeout
        while QUIT_LINE not in passive.buffer:
            assert time.monotonic() < drain_deadline, "the toggler's /quit never reached the room"
            for key, _ in selector.select(timeout=1.0):
                try:
                    key.data.read()
                except EOFError:
                    if key.data is not toggler:
                        raise
                    selector.unregister(key.fileobj)
        return {"passive_bytes": passive.received - start_bytes, "nick_lines_sent": sent}
    finally:
        selector.close()
        for member in everyone:
            member.sock.close()


class ChatFloodTests(E2ETestCase):
    """Chat flood control against a real twistd."""

    def test_nick_toggling_is_bounded(self) -> None:
        """A member toggling /nick for 2 s costs a passive member of a 50-member room a
        few lines."""
        server = self.start_server("--serve", "chat=tcp:0:interface=127.0.0.1")
        figures = toggle_nicks(server.port_of("chat"))
        print(f"\nnick toggling, {MEMBERS} members, {TOGGLE_SECONDS:g} s: {figures}")
        assert figures["nick_lines_sent"] > 1000  # the toggler really flooded
        # Budget: 20 tokens at once + 5/s for ~2 s, 5 tokens a rename: at most ~8 renames of ~50
        # bytes each, plus the leave line; 2 KiB leaves room for a slow run.
        assert figures["passive_bytes"] < 2048, figures


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        twistd = Twistd(root, "--serve", "chat=tcp:0:interface=127.0.0.1")
        try:
            started = time.monotonic()
            figures = toggle_nicks(twistd.port_of("chat"), drain_timeout=300.0)
            print({**figures, "seconds_until_quit_seen": round(time.monotonic() - started, 1)})
        finally:
            twistd.stop()
