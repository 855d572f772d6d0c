"""Accounts end to end (issue 10): deny by default with --users, login limits per account.

A real ``twistd tcpfiles`` on 127.0.0.1; clients bind their source to other loopback addresses
(127.x.y.z) to come from other networks.  Nothing but loopback is used.
"""

from __future__ import annotations

import socket

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Twistd, Wire

BAD = b"ERR unauthorized bad user name or password"


class WireFrom(Wire):
    """A files-protocol client whose socket is bound to a chosen loopback source address."""

    def __init__(self, port: int, source: str, timeout: float = 20.0) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        )
        self.buffer = b""


class AccountsTests(E2ETestCase):
    """--users over --auth in a real twistd."""

    def setUp(self) -> None:
        """--root with alice/ and sub/; a users file (``self.users``) naming alice only."""
        super().setUp()
        for name in ("alice", "sub"):
            (self.root / name).mkdir()
            (self.root / name / f"{name}.txt").write_bytes(name.encode())
        self.users = self.tmp_path / "users"
        self.users.write_text("alice alice rw\n")

    def start(self) -> Twistd:
        return self.start_server(
            "--auth",
            "memory:alice:alices-pw:carol:carols-pw",
            "--users",
            str(self.users),
            "--writable",
        )

    def test_unlisted_account_is_refused_like_a_bad_password(self) -> None:
        """carol (right password, not in --users) gets the exact bytes of a wrong password."""
        server = self.start()
        wire = WireFrom(server.port, "127.0.0.1")
        wire.send(b"LOGIN alice wrong\r\nLOGIN carol carols-pw\r\nLOGIN carol nope\r\nLIST\n")
        assert [wire.line() for _ in range(3)] == [BAD, BAD, BAD]
        assert wire.line().startswith(b"ERR unauthorized log in first")
        server.wait_for(r"failed to log in as carol")
        assert "carols-pw" not in server.text()

    def test_star_line_gives_carol_read_only(self) -> None:
        """'* sub ro': carol reads sub/ and nothing else, and may not write though --writable."""
        self.users.write_text("alice alice rw\n* sub ro\n")
        server = self.start()
        wire = Wire(server.port)
        wire.send(b"LOGIN carol carols-pw\nLIST\nGET sub.txt\nGET alice/alice.txt\nMKDIR x\n")
        assert wire.line() == b"OK welcome carol"
        assert wire.line() == b"OK list" and wire.line().endswith(b" sub.txt")
        assert wire.line() == b"END 1"
        assert wire.line() == b"OK 3" and wire.exactly(3) == b"sub"
        assert wire.line().startswith(b"ERR not-found")
        assert wire.line().startswith(b"ERR read-only")

    def test_chat_login_refuses_unlisted_account(self) -> None:
        """chat /login goes through the same realm: carol unlisted gets the bad-password line."""
        server = self.start_server(
            "--auth",
            "memory:alice:alices-pw:carol:carols-pw",
            "--users",
            str(self.users),
            "--serve",
            "chat=tcp:0:interface=127.0.0.1",
        )
        with socket.create_connection(("127.0.0.1", server.port_of("chat")), timeout=20) as chat:
            reader = chat.makefile("rb")
            reader.readline()  # greeting
            chat.sendall(b"/login carol carols-pw\n")
            assert reader.readline().rstrip(b"\r\n") == b"!!! bad user name or password"
            chat.sendall(b"/login alice alices-pw\n")
            assert reader.readline().startswith(b"*** welcome, alice")

    def test_guesses_for_one_account_from_many_networks_back_off(self) -> None:
        """Five wrong passwords for alice from five /24s: a sixth /24 is told to wait, unchecked."""
        server = self.start()
        sixth = WireFrom(server.port, "127.9.0.1")  # connected first: the back-off is 1 s
        for n in range(5):
            wire = WireFrom(server.port, f"127.{n + 1}.0.1")
            wire.send(b"LOGIN alice guess\n")
            assert wire.line() == BAD
        wire = sixth
        wire.send(b"LOGIN alice alices-pw\nLOGIN carol x\n")
        assert wire.line() == b"ERR busy too many failed logins from your address; wait 1 s"
        assert wire.line() == BAD  # another account from that address is checked as usual
