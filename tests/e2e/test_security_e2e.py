"""Safe to expose: TLS with verified clients, accounts, per-user roots and rights, end to end.

The CA and certificates are made here, per test run; nothing but loopback is used.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess

import pytest

from tests.e2e.certs import make_ca, make_server_cert
from tests.e2e.harness import Twistd, Wire, make_file, run_cli


@pytest.fixture
def pki(tmp_path):
    """A CA, a certificate for localhost/127.0.0.1, one for another name, and a foreign CA."""
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = make_ca(pki)
    good = make_server_cert(pki, ca)
    wrong = make_server_cert(pki, ca, names=("other.example",), addresses=(), stem="wrong")
    foreign_dir = pki / "foreign"
    foreign_dir.mkdir()
    foreign = make_ca(foreign_dir, "someone else")[0]
    return {"ca": ca[0].cert, "good": good, "wrong": wrong, "foreign": foreign.cert}


def ssl_listen(pair, port: str = "0") -> str:
    return f"ssl:{port}:interface=127.0.0.1:certKey={pair.cert}:privateKey={pair.key}"


def tcpfiles(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, stdin=stdin)


@pytest.fixture
def tls_server(root, pki, start_server):
    (root / "notes.txt").write_bytes(b"over tls\n")
    return start_server(
        "--serve", f"echo={ssl_listen(pki['good'])}", listen=ssl_listen(pki["good"])
    )


def test_verified_tls(tls_server, pki):
    """tls:host=…:port=… with --ca: files and echo work, certificate and host name checked."""
    server = f"tls:host=localhost:port={tls_server.port}"
    done = tcpfiles("ls", "-s", server, "--ca", str(pki["ca"]))
    assert done.returncode == 0, done.stderr
    assert "notes.txt" in done.stdout
    done = tcpfiles(
        "echo",
        "-s",
        f"localhost:{tls_server.port_of('echo')}",
        "--ca",
        str(pki["ca"]),
        stdin="hi\n",
    )
    assert (done.returncode, done.stdout) == (0, "hi\n"), done.stderr


@pytest.mark.parametrize("case", ["self-signed", "foreign-ca", "wrong-name"])
def test_tls_refusals(root, pki, start_server, case):
    """An unknown CA, another CA, or a certificate for another name: refused, clearly, exit 3."""
    pair = pki["wrong"] if case == "wrong-name" else pki["good"]
    server = start_server(listen=ssl_listen(pair))
    args = ["ls", "-s", f"tls:host=localhost:port={server.port}"]
    if case == "foreign-ca":
        args += ["--ca", str(pki["foreign"])]
    elif case == "wrong-name":
        args += ["--ca", str(pki["ca"])]
    done = tcpfiles(*args)
    assert done.returncode == 3
    expected = "not for this host name" if case == "wrong-name" else "is not trusted"
    assert expected in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1


def test_insecure_is_explicit_and_warns(tls_server):
    """--insecure connects without verification, and says so."""
    done = tcpfiles("ls", "-s", f"tls:host=localhost:port={tls_server.port}", "--insecure")
    assert done.returncode == 0 and "notes.txt" in done.stdout
    assert "warning: --insecure" in done.stderr


def test_old_tls_versions_are_refused(tls_server):
    """A client that offers at most TLS 1.1 is refused by the server itself."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let *this* side offer old versions
    with pytest.warns(DeprecationWarning):
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|protocol version"):
            context.wrap_socket(raw, server_hostname="localhost")


@pytest.fixture
def accounts(root, tmp_path, start_server):
    """A server with accounts: alice (rw, own root), bob (ro, own root), carol (`*`: --root ro)."""
    for name in ("alice", "bob"):
        (root / name).mkdir()
        (root / name / f"{name}.txt").write_bytes(name.encode())
    (root / "shared.txt").write_bytes(b"shared")
    users = tmp_path / "users"
    users.write_text("alice alice rw\nbob bob ro\n* . ro\n")
    passwd = tmp_path / "passwd"
    passwd.write_text("carol:carols-password\n")
    return start_server(
        "--auth",
        "memory:alice:alices-password:bob:bobs-password",
        "--auth",
        f"file:{passwd}",
        "--users",
        str(users),
        "--writable",
    )


def test_login_required_before_anything(accounts):
    """Before LOGIN only HELP and QUIT answer; a bad password looks like an unknown user."""
    wire = Wire(accounts.port)
    for request in (b"GET shared.txt\n", b"LIST\n", b"PUT 1 " + b"0" * 64 + b" x\n"):
        wire.send(request)
        assert wire.line().startswith(b"ERR unauthorized log in first")
    wire.send(b"LOGIN alice nope\nLOGIN zed nope\nLOGIN alice alices-password\nLIST\n")
    assert wire.line() == wire.line() == b"ERR unauthorized bad user name or password"
    assert wire.line() == b"OK welcome alice"
    assert wire.line() == b"OK list" and wire.line().endswith(b" alice.txt")
    assert wire.line() == b"END 1"


def test_accounts_through_the_cli(accounts, tmp_path):
    """Each account sees its own root with its own rights; passwords never reach the log."""
    local = tmp_path / "up.txt"
    local.write_bytes(b"uploaded by alice")
    alice = {"TCPFILES_PASSWORD": "alices-password"}
    base = ["-s", f"127.0.0.1:{accounts.port}", "--user"]
    assert tcpfiles("put", *base, "alice", str(local), env=alice).returncode == 0
    done = tcpfiles("ls", *base, "alice", env=alice)
    assert "up.txt" in done.stdout and "bob.txt" not in done.stdout
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login bob password bobs-password\n")
    netrc.chmod(0o600)
    done = tcpfiles("put", *base, "bob", "--netrc", str(netrc), str(local))
    assert done.returncode == 1 and "(read-only)" in done.stderr
    done = tcpfiles("get", *base, "bob", "--netrc", str(netrc), "alice.txt", "-o", str(tmp_path))
    assert done.returncode == 1 and "(not-found)" in done.stderr  # alice's file: not in bob's root
    carol = {"TCPFILES_PASSWORD": "carols-password"}  # from the file: checker, on --root (*)
    done = tcpfiles("get", *base, "carol", "shared.txt", "-o", str(tmp_path / "s.txt"), env=carol)
    assert done.returncode == 0 and (tmp_path / "s.txt").read_bytes() == b"shared"
    done = tcpfiles("put", *base, "carol", str(local), env=carol)
    assert done.returncode == 1 and "(read-only)" in done.stderr  # * . ro, though --writable
    done = tcpfiles("ls", *base, "alice", env={"TCPFILES_PASSWORD": "wrong"})
    assert done.returncode == 1 and "login refused" in done.stderr
    accounts.wait_for(r"failed to log in as alice")
    for secret in ("alices-password", "bobs-password", "carols-password", "wrong"):
        assert secret not in accounts.text().replace("failed to log in", "")


def test_no_password_source_is_a_usage_error(accounts):
    """--user with no password available (not a terminal) says how to give one; exit 2."""
    done = tcpfiles(
        "ls", "-s", f"127.0.0.1:{accounts.port}", "--user", "alice", "--netrc", os.devnull
    )
    assert done.returncode == 2 and "TCPFILES_PASSWORD" in done.stderr


def test_chat_with_accounts(root, tmp_path):
    """With --auth, the chat client logs in and its nick is its account name."""
    server = Twistd(root, "--auth", "memory:alice:pw1", "--serve", "chat=tcp:0:interface=127.0.0.1")
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


def test_tls_shortcut_for_default_endpoints(root, pki, tmp_path):
    """--tls-cert/--tls-key: the documented shortcut starts a TLS server (checked on its port)."""
    server = Twistd(
        root,
        "--tls-cert",
        str(pki["good"].cert),
        "--tls-key",
        str(pki["good"].key),
        listen=ssl_listen(pki["good"]),
    )
    try:
        context = ssl.create_default_context(cafile=str(pki["ca"]))
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"HELP\n")
                assert tls.recv(5) == b"OK 11"
    finally:
        server.stop()
    server.assert_clean_log()


def test_upload_and_download_over_tls(root, pki, start_server, tmp_path):
    """put and get over verified TLS, bodies well past one chunk (the copying producer, pushed
    under TLS, on both sides): what lands is byte-exact, and what comes back too."""
    server = start_server("--writable", listen=ssl_listen(pki["good"]))
    address = f"tls:host=localhost:port={server.port}"
    local = tmp_path / "up.bin"
    sha = make_file(local, (5 << 20) + 17, 3)
    done = tcpfiles("put", "-s", address, "--ca", str(pki["ca"]), str(local), "up.bin")
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256((root / "up.bin").read_bytes()).hexdigest() == sha
    back = tmp_path / "back.bin"
    done = tcpfiles("get", "-s", address, "--ca", str(pki["ca"]), "up.bin", "-o", str(back))
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(back.read_bytes()).hexdigest() == sha
