"""Safe to expose: TLS with verified clients, accounts, per-user roots and rights, end to end.

The CA and certificates are made here, per test run; nothing but loopback is used.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
import warnings
from functools import cached_property
from typing import Any

from tests.e2e.cases import E2ETestCase, cases, with_cases
from tests.e2e.certs import make_ca, make_server_cert
from tests.e2e.harness import Twistd, Wire, make_file, run_cli


def ssl_listen(pair, port: str = "0") -> str:
    return f"ssl:{port}:interface=127.0.0.1:certKey={pair.cert}:privateKey={pair.key}"


def tcpfiles(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, stdin=stdin)


@with_cases
class SecurityTests(E2ETestCase):
    """TLS, accounts, per-user roots and rights, end to end."""

    @cached_property
    def pki(self) -> dict[str, Any]:
        """A CA, a certificate for localhost/127.0.0.1, one for another name, and a foreign CA."""
        pki = self.tmp_path / "pki"
        pki.mkdir()
        ca = make_ca(pki)
        good = make_server_cert(pki, ca)
        wrong = make_server_cert(pki, ca, names=("other.example",), addresses=(), stem="wrong")
        foreign_dir = pki / "foreign"
        foreign_dir.mkdir()
        foreign = make_ca(foreign_dir, "someone else")[0]
        return {"ca": ca[0].cert, "good": good, "wrong": wrong, "foreign": foreign.cert}

    def tls_server(self) -> Twistd:
        """files and echo over TLS with the good certificate; notes.txt served."""
        (self.root / "notes.txt").write_bytes(b"over tls\n")
        return self.start_server(
            "--serve", f"echo={ssl_listen(self.pki['good'])}", listen=ssl_listen(self.pki["good"])
        )

    def accounts(self) -> Twistd:
        """A server with accounts: alice (rw, own root), bob (ro, own root), carol
        (`*`: --root ro)."""
        for name in ("alice", "bob"):
            (self.root / name).mkdir()
            (self.root / name / f"{name}.txt").write_bytes(name.encode())
        (self.root / "shared.txt").write_bytes(b"shared")
        users = self.tmp_path / "users"
        users.write_text("alice alice rw\nbob bob ro\n* . ro\n")
        passwd = self.tmp_path / "passwd"
        passwd.write_text("carol:carols-password\n")
        return self.start_server(
            "--auth",
            "memory:alice:alices-password:bob:bobs-password",
            "--auth",
            f"file:{passwd}",
            "--users",
            str(users),
            "--writable",
        )

    def test_verified_tls(self) -> None:
        """tls:host=…:port=… with --ca: files and echo work, certificate and host name checked."""
        tls_server = self.tls_server()
        server = f"tls:host=localhost:port={tls_server.port}"
        done = tcpfiles("ls", "-s", server, "--ca", str(self.pki["ca"]))
        assert done.returncode == 0, done.stderr
        assert "notes.txt" in done.stdout
        done = tcpfiles(
            "echo",
            "-s",
            f"localhost:{tls_server.port_of('echo')}",
            "--ca",
            str(self.pki["ca"]),
            stdin="hi\n",
        )
        assert (done.returncode, done.stdout) == (0, "hi\n"), done.stderr

    @cases(self_signed=("self-signed",), foreign_ca=("foreign-ca",), wrong_name=("wrong-name",))
    def test_tls_refusals(self, case: str) -> None:
        """An unknown CA, another CA, or a certificate for another name: refused, clearly,
        exit 3."""
        pair = self.pki["wrong"] if case == "wrong-name" else self.pki["good"]
        server = self.start_server(listen=ssl_listen(pair))
        args = ["ls", "-s", f"tls:host=localhost:port={server.port}"]
        if case == "foreign-ca":
            args += ["--ca", str(self.pki["foreign"])]
        elif case == "wrong-name":
            args += ["--ca", str(self.pki["ca"])]
        done = tcpfiles(*args)
        assert done.returncode == 3
        expected = "not for this host name" if case == "wrong-name" else "is not trusted"
        assert expected in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1

    def test_insecure_is_explicit_and_warns(self) -> None:
        """--insecure connects without verification, and says so."""
        tls_server = self.tls_server()
        done = tcpfiles("ls", "-s", f"tls:host=localhost:port={tls_server.port}", "--insecure")
        assert done.returncode == 0 and "notes.txt" in done.stdout
        assert "warning: --insecure" in done.stderr

    def test_old_tls_versions_are_refused(self) -> None:
        """A client that offers at most TLS 1.1 is refused by the server itself."""
        tls_server = self.tls_server()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let *this* side offer old versions
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        assert any(issubclass(w.category, DeprecationWarning) for w in caught), caught
        with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as raw:
            with self.assertRaises(ssl.SSLError) as refused:
                context.wrap_socket(raw, server_hostname="localhost")
        self.assertRegex(str(refused.exception), "PROTOCOL_VERSION|protocol version")

    def test_login_required_before_anything(self) -> None:
        """Before LOGIN only HELP and QUIT answer; a bad password looks like an unknown user."""
        accounts = self.accounts()
        wire = Wire(accounts.port)
        for request in (b"GET shared.txt\n", b"LIST\n", b"PUT 1 " + b"0" * 64 + b" x\n"):
            wire.send(request)
            assert wire.line().startswith(b"ERR unauthorized log in first")
        wire.send(b"LOGIN alice nope\nLOGIN zed nope\nLOGIN alice alices-password\nLIST\n")
        assert wire.line() == wire.line() == b"ERR unauthorized bad user name or password"
        assert wire.line() == b"OK welcome alice"
        assert wire.line() == b"OK list" and wire.line().endswith(b" alice.txt")
        assert wire.line() == b"END 1"

    def test_accounts_through_the_cli(self) -> None:
        """Each account sees its own root with its own rights; passwords never reach the log."""
        accounts = self.accounts()
        local = self.tmp_path / "up.txt"
        local.write_bytes(b"uploaded by alice")
        alice = {"TCPFILES_PASSWORD": "alices-password"}
        base = ["-s", f"127.0.0.1:{accounts.port}", "--user"]
        assert tcpfiles("put", *base, "alice", str(local), env=alice).returncode == 0
        done = tcpfiles("ls", *base, "alice", env=alice)
        assert "up.txt" in done.stdout and "bob.txt" not in done.stdout
        netrc = self.tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login bob password bobs-password\n")
        netrc.chmod(0o600)
        done = tcpfiles("put", *base, "bob", "--netrc", str(netrc), str(local))
        assert done.returncode == 1 and "(read-only)" in done.stderr
        done = tcpfiles(
            "get", *base, "bob", "--netrc", str(netrc), "alice.txt", "-o", str(self.tmp_path)
        )
        # alice's file: not in bob's root
        assert done.returncode == 1 and "(not-found)" in done.stderr
        carol = {"TCPFILES_PASSWORD": "carols-password"}  # from the file: checker, on --root (*)
        done = tcpfiles(
            "get", *base, "carol", "shared.txt", "-o", str(self.tmp_path / "s.txt"), env=carol
        )
        assert done.returncode == 0 and (self.tmp_path / "s.txt").read_bytes() == b"shared"
        done = tcpfiles("put", *base, "carol", str(local), env=carol)
        assert done.returncode == 1 and "(read-only)" in done.stderr  # * . ro, though --writable
        done = tcpfiles("ls", *base, "alice", env={"TCPFILES_PASSWORD": "wrong"})
        assert done.returncode == 1 and "login refused" in done.stderr
        accounts.wait_for(r"failed to log in as alice")
        for secret in ("alices-password", "bobs-password", "carols-password", "wrong"):
            assert secret not in accounts.text().replace("failed to log in", "")

    def test_no_password_source_is_a_usage_error(self) -> None:
        """--user with no password available (not a terminal) says how to give one; exit 2."""
        accounts = self.accounts()
        done = tcpfiles(
            "ls", "-s", f"127.0.0.1:{accounts.port}", "--user", "alice", "--netrc", os.devnull
        )
        assert done.returncode == 2 and "TCPFILES_PASSWORD" in done.stderr

    def test_chat_with_accounts(self) -> None:
        """With --auth, the chat client logs in and its nick is its account name."""
        server = Twistd(
            self.root, "--auth", "memory:alice:pw1", "--serve", "chat=tcp:0:interface=127.0.0.1"
        )
        try:
            done = tcpfiles(
                "chat",
                "-s",
                f"127.0.0.1:{server.port_of('chat')}",
                "--user",
                "alice",
                env={"TCPFILES_PASSWORD": "pw1"},
                stdin="hello\n",
            )
            assert done.returncode == 0 and "*** welcome, alice" in done.stdout, done.stderr
        finally:
            server.stop()
        assert "pw1" not in server.text()

    def test_tls_shortcut_for_default_endpoints(self) -> None:
        """--tls-cert/--tls-key: the documented shortcut starts a TLS server (checked on
        its port)."""
        server = Twistd(
            self.root,
            "--tls-cert",
            str(self.pki["good"].cert),
            "--tls-key",
            str(self.pki["good"].key),
            listen=ssl_listen(self.pki["good"]),
        )
        try:
            context = ssl.create_default_context(cafile=str(self.pki["ca"]))
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"HELP\n")
                    assert tls.recv(5) == b"OK 11"
        finally:
            server.stop()
        server.assert_clean_log()

    def test_upload_and_download_over_tls(self) -> None:
        """put and get over verified TLS, bodies well past one chunk (the copying producer, pushed
        under TLS, on both sides): what lands is byte-exact, and what comes back too."""
        server = self.start_server("--writable", listen=ssl_listen(self.pki["good"]))
        address = f"tls:host=localhost:port={server.port}"
        local = self.tmp_path / "up.bin"
        sha = make_file(local, (5 << 20) + 17, 3)
        done = tcpfiles("put", "-s", address, "--ca", str(self.pki["ca"]), str(local), "up.bin")
        assert done.returncode == 0, done.stderr
        assert hashlib.sha256((self.root / "up.bin").read_bytes()).hexdigest() == sha
        back = self.tmp_path / "back.bin"
        done = tcpfiles(
            "get", "-s", address, "--ca", str(self.pki["ca"]), "up.bin", "-o", str(back)
        )
        assert done.returncode == 0, done.stderr
        assert hashlib.sha256(back.read_bytes()).hexdigest() == sha
