"""Accounts: the users file, the realm, checkers, the login limiter, and LOGIN on the wire."""

from __future__ import annotations

import os

import pytest
from twisted.cred import strcred
from twisted.internet import defer, task
from twisted.logger import capturedLogs

from tcpfiles.files.accounts import (
    ANONYMOUS,
    EitherEncoding,
    FilesRealm,
    LoginLimiter,
    make_portal,
    parse_users,
    password_credentials,
)
from tcpfiles.files.paths import Root
from tcpfiles.files.server import FileServerFactory, Limits
from tests.helpers import connect, pump


def inline(f, *args):
    return defer.maybeDeferred(f, *args)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "files"
    for name in ("alice", "bob"):
        (root / name).mkdir(parents=True)
        (root / name / f"{name}.txt").write_bytes(name.encode())
    (root / "public.txt").write_bytes(b"for everyone")
    users = tmp_path / "users"
    users.write_text("# name  root   rights\nalice alice rw\nbob   bob   ro  # read-only\n")
    return root, users


def test_parse_users(tree, tmp_path):
    """NAME ROOT ro|rw lines, relative to --root or absolute; mistakes name their line."""
    root, users = tree
    grants = parse_users(str(users), Root.at(str(root)))
    assert grants["alice"].root.real.endswith("/files/alice") and grants["alice"].writable
    assert not grants["bob"].writable
    bad = tmp_path / "bad"
    for text, message in [
        ("carol alice rx\n", ":1: expected NAME ROOT ro|rw"),
        ("carol nowhere ro\n", "is not a directory"),
        ("a alice ro\na bob ro\n", ":2: a is listed twice"),
    ]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            parse_users(str(bad), Root.at(str(root)))
    bad.write_text(f"dave {root / 'bob'} rw\n")  # absolute
    assert parse_users(str(bad), Root.at(str(root)))["dave"].root.real.endswith("/bob")


@pytest.mark.parametrize("spec", ["memory:alice:pw", "file:{passwd}"])
def test_either_encoding_checkers(tmp_path, spec):
    """memory: (str) and file: (bytes) checkers both accept a LOGIN, and refuse a bad one."""
    passwd = tmp_path / "passwd"
    passwd.write_text("alice:pw\n")
    checker = EitherEncoding(strcred.makeChecker(spec.format(passwd=passwd)))
    good = checker.requestAvatarId(password_credentials("alice", "pw"))
    assert good.result == "alice"
    bad = checker.requestAvatarId(password_credentials("alice", "nope"))
    failures = []
    bad.addErrback(failures.append)
    assert failures and failures[0].check(Exception)


def test_login_limiter():
    """Five failures in a minute block the address until the oldest one is a minute old."""
    now = [0.0]
    limiter = LoginLimiter(lambda: now[0], attempts=5, window=60)
    for _ in range(5):
        assert limiter.wait("a") == 0
        limiter.failed("a")
        now[0] += 1
    assert limiter.wait("a") == pytest.approx(55)
    assert limiter.wait("b") == 0  # per address
    now[0] = 60.5
    assert limiter.wait("a") == 0


def make(tree, anonymous=False, clock=None):
    root, users = tree
    base = Root.at(str(root))
    realm = FilesRealm(base, False, parse_users(str(users), base), 1 << 20, inline)
    portal = make_portal(
        realm, [strcred.makeChecker("memory:alice:apw:bob:bpw:carol:cpw")], anonymous
    )
    store, _ = realm.store_for(base)
    return FileServerFactory(store, clock or task.Clock(), Limits(), None, portal, anonymous)


def ask(protocol, transport, data: bytes) -> list[bytes]:
    transport.clear()
    protocol.dataReceived(data)
    pump(transport)
    return transport.value().splitlines()


def test_nothing_but_help_and_quit_before_login(tree):
    """Every request that touches files needs a login first."""
    protocol, transport = connect(make(tree))
    sha = "0" * 64
    requests = [
        b"GET public.txt",
        b"RESUME 0 public.txt",
        b"LIST",
        b"STAT public.txt",
        f"PUT 1 {sha} x".encode(),
        b"MKDIR d",
    ]
    for request in requests:
        assert ask(protocol, transport, request + b"\n") == [
            b"ERR unauthorized log in first: LOGIN <user> <password>"
        ]
    assert ask(protocol, transport, b"HELP\n")[0].startswith(b"OK ")
    assert ask(protocol, transport, b"QUIT\n") == [b"OK bye"]


def test_one_answer_for_unknown_user_and_wrong_password(tree):
    """A wrong password and a missing user look the same; neither password is logged."""
    protocol, transport = connect(make(tree))
    with capturedLogs() as events:
        wrong = ask(protocol, transport, b"LOGIN alice secret-guess-1\n")
        missing = ask(protocol, transport, b"LOGIN mallory secret-guess-2\n")
        ok = ask(protocol, transport, b"LOGIN alice apw\n")
    assert wrong == missing == [b"ERR unauthorized bad user name or password"]
    assert ok == [b"OK welcome alice"]
    text = repr([dict(e) for e in events])
    assert "secret-guess" not in text and "apw" not in text
    assert "LOGIN alice ****" in text


def test_accounts_are_confined_to_their_roots_with_their_rights(tree):
    """alice sees only her root and may write; bob only his, read-only; carol gets --root."""
    factory = make(tree)
    alice, alice_t = connect(factory, port=1)
    assert ask(alice, alice_t, b"LOGIN alice apw\n") == [b"OK welcome alice"]
    listing = ask(alice, alice_t, b"LIST\n")
    assert listing[0] == b"OK list" and listing[1].endswith(b" alice.txt")
    assert listing[2] == b"END 1"
    assert ask(alice, alice_t, b"GET bob/bob.txt\n")[0].startswith(b"ERR not-found")
    assert ask(alice, alice_t, b"GET ../bob/bob.txt\n")[0].startswith(b"ERR bad-request")
    assert ask(alice, alice_t, b"MKDIR made\n") == [b"OK created"]
    bob, bob_t = connect(factory, port=2)
    ask(bob, bob_t, b"LOGIN bob bpw\n")
    assert ask(bob, bob_t, b"MKDIR nope\n")[0].startswith(b"ERR read-only")
    assert ask(bob, bob_t, b"GET bob.txt\n") == [b"OK 3", b"bob"]
    carol, carol_t = connect(factory, port=3)
    ask(carol, carol_t, b"LOGIN carol cpw\n")
    assert ask(carol, carol_t, b"GET public.txt\n")[1] == b"for everyone"
    assert ask(carol, carol_t, b"MKDIR x\n")[0].startswith(b"ERR read-only")  # not --writable


def test_anonymous_is_read_only_on_root(tree):
    """With --anonymous, no login reads --root; writes are refused."""
    protocol, transport = connect(make(tree, anonymous=True))
    assert ask(protocol, transport, b"GET public.txt\n") == [b"OK 12", b"for everyone"]
    assert ask(protocol, transport, b"MKDIR x\n")[0].startswith(b"ERR read-only")


def test_failed_logins_are_limited_per_address(tree):
    """After five failures, LOGIN is refused unchecked until the window passes."""
    clock = task.Clock()
    protocol, transport = connect(make(tree, clock=clock))
    for _ in range(5):
        ask(protocol, transport, b"LOGIN alice bad\n")
    assert ask(protocol, transport, b"LOGIN alice apw\n") == [
        b"ERR busy too many failed logins from your address; wait 60 s"
    ]
    other, other_t = connect(protocol.factory, host="192.0.2.99")  # another address
    assert ask(other, other_t, b"LOGIN alice apw\n") == [b"OK welcome alice"]
    clock.advance(61)
    assert ask(protocol, transport, b"LOGIN alice apw\n") == [b"OK welcome alice"]


def test_login_without_accounts(tmp_path):
    """LOGIN on a server without --auth is a harmless bad-request."""
    (tmp_path / "f").write_bytes(b"x")
    from tests.files.helpers import make_factory

    protocol, transport = connect(make_factory(tmp_path))
    assert ask(protocol, transport, b"LOGIN a b\n")[0].startswith(b"ERR bad-request")
    assert ask(protocol, transport, b"GET f\n") == [b"OK 1", b"x"]


def test_realm_shares_stores_per_root(tree):
    """Two accounts on one root share its store (hash cache) and its upload registry."""
    root, _ = tree
    base = Root.at(str(root))
    realm = FilesRealm(base, True, {}, 1 << 20, inline)
    one, two = realm.account("x"), realm.account("y")
    assert one.store is two.store and one.uploads is two.uploads
    assert realm.account(ANONYMOUS).uploads is None
    assert os.path.samefile(one.store.root.real, root)
