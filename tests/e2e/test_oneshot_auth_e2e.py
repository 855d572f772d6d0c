"""oneshot under --auth, in a real twistd: it sees only what an anonymous user may see."""

from __future__ import annotations

import re
import signal

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Twistd, Wire
from tests.e2e.test_behaviours_e2e import LOOP, talk

WARNING = "oneshot does not log users in"


def stopped_log(server: Twistd) -> str:
    """Stop the server cleanly and return its whole log."""
    assert server.stop() in (0, -signal.SIGTERM)
    return server.text()


class OneshotAuthTests(E2ETestCase):
    """oneshot next to --auth, in a real twistd."""

    def setUp(self) -> None:
        """--root with a public file and alice's private one below it."""
        super().setUp()
        (self.root / "notes.txt").write_bytes(b"hello\n")
        (self.root / "alice").mkdir()
        (self.root / "alice" / "secret.txt").write_bytes(b"alice's secret\n")

    def test_oneshot_without_anonymous_answers_1_and_warns_once(self) -> None:
        """--auth without --anonymous: no file through oneshot, one warning at start, files
        locked."""
        server = self.start_server(
            "--auth", "memory:alice:pw", "--serve", f"oneshot={LOOP}", "--serve", f"oneshot={LOOP}"
        )
        server.wait_for(re.escape(WARNING))
        port = server.port_of("oneshot")
        assert talk(port, b"alice/secret.txt\n") == b"1"
        assert talk(port, b"notes.txt") == b"1"
        wire = Wire(server.port)
        wire.send(b"GET notes.txt\n")
        assert wire.line().startswith(b"ERR unauthorized")
        wire.close()
        log = stopped_log(server)
        assert log.count(WARNING) == 1, log
        assert "refused: no files to serve" in log

    def test_oneshot_with_anonymous_serves_the_anonymous_view(self) -> None:
        """--auth --anonymous: oneshot serves what an anonymous files client may GET; no warning."""
        server = self.start_server(
            "--auth", "memory:alice:pw", "--anonymous", "--serve", f"oneshot={LOOP}"
        )
        port = server.port_of("oneshot")
        assert talk(port, b"notes.txt\n") == b"hello\n"
        assert talk(port, b"alice/secret.txt") == Wire(server.port).get("alice/secret.txt")
        assert talk(port, b"../escape") == b"1"
        assert WARNING not in stopped_log(server)

    def test_oneshot_logs_a_hostile_name_escaped(self) -> None:
        """CR, ESC, U+202E and braces in a name reach the server log escaped, on one line."""
        server = self.start_server("--serve", f"oneshot={LOOP}")
        name = "x\ry\x1b[31mz\u202e{x}".encode()
        assert talk(server.port_of("oneshot"), name) == b"1"
        line = server.wait_for(r"oneshot x\S* -> refused").string
        assert r"oneshot x\u000dy\u001b[31mz\u202e{x} -> refused" in line
        assert not any(ch in line.rstrip("\n") for ch in "\r\x1b\u202e")
