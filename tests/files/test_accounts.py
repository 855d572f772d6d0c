"""Accounts: the users file, the realm, checkers, the login limiter, and LOGIN on the wire."""

from __future__ import annotations

import os
import pathlib

from twisted.cred import error, strcred
from twisted.internet import task
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.core.auth import (
    EitherEncoding,
    LoginLimiter,
    make_portal,
    network_of,
    password_credentials,
)
from tcpfiles.core.plugin import Context
from tcpfiles.files.factory import factory_for
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.testing import connect, pump
from tcpfiles.tree.accounts import (
    ANONYMOUS,
    FilesRealm,
    Users,
    anonymous_root,
    make_accounts,
    parse_users,
)
from tcpfiles.tree.hashing import Hasher, inline
from tcpfiles.tree.interfaces import IFilesAccount
from tcpfiles.tree.paths import Root
from tests.helpers import cases, temporary_directory, with_cases


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


@with_cases
class FilesAccountsTests(SynchronousTestCase):
    """The users file, checkers, the limiter and LOGIN on the files wire."""

    def setUp(self) -> None:
        self.tmp_path = temporary_directory(self)

    def tree(self) -> tuple[pathlib.Path, pathlib.Path]:
        """files/ with alice's, bob's and a public file; a users file granting alice and bob."""
        root = self.tmp_path / "files"
        for name in ("alice", "bob"):
            (root / name).mkdir(parents=True)
            (root / name / f"{name}.txt").write_bytes(name.encode())
        (root / "public.txt").write_bytes(b"for everyone")
        users = self.tmp_path / "users"
        users.write_text("# name  root   rights\nalice alice rw\nbob   bob   ro  # read-only\n")
        return root, users

    def test_parse_users(self) -> None:
        """NAME ROOT ro|rw lines, relative to --root or absolute; mistakes name their line."""
        root, users = self.tree()
        grants = parse_users(str(users), Root.at(str(root))).grants
        assert grants["alice"].root.real.endswith("/files/alice") and grants["alice"].writable
        assert not grants["bob"].writable
        bad = self.tmp_path / "bad"
        for text, message in [
            ("carol alice rx\n", ":1: expected NAME ROOT ro|rw"),
            ("carol nowhere ro\n", "is not a directory"),
            ("a alice ro\na bob ro\n", ":2: a is listed twice"),
        ]:
            bad.write_text(text)
            with self.assertRaisesRegex(ValueError, message):
                parse_users(str(bad), Root.at(str(root)))
        bad.write_text(f"dave {root / 'bob'} rw\n")  # absolute
        assert parse_users(str(bad), Root.at(str(root))).grants["dave"].root.real.endswith("/bob")

    @cases(
        memory=("memory:alice:pw",),
        file=("file:{passwd}",),
    )
    def test_either_encoding_checkers(self, spec) -> None:
        """memory: (str) and file: (bytes) checkers both accept a LOGIN, and refuse a bad one."""
        passwd = self.tmp_path / "passwd"
        passwd.write_text("alice:pw\n")
        checker = EitherEncoding(strcred.makeChecker(spec.format(passwd=passwd)))
        good = checker.requestAvatarId(password_credentials("alice", "pw"))
        assert good.result == "alice"
        bad = checker.requestAvatarId(password_credentials("alice", "nope"))
        failures = []
        bad.addErrback(failures.append)
        assert failures and failures[0].check(Exception)

    def test_login_limiter(self) -> None:
        """Five failures in a minute block the address until the oldest one is a minute old."""
        now = [0.0]
        limiter = LoginLimiter(lambda: now[0], attempts=5, window=60)
        for n in range(5):
            assert limiter.wait("192.0.2.1", f"user{n}") == 0
            limiter.failed("192.0.2.1", f"user{n}")  # five accounts: only the address is limited
            now[0] += 1
        self.assertAlmostEqual(limiter.wait("192.0.2.1", "alice"), 55)
        assert limiter.wait("198.51.100.1", "alice") == 0  # per network
        now[0] = 60.5
        assert limiter.wait("192.0.2.1", "alice") == 0

    def test_nothing_but_help_and_quit_before_login(self) -> None:
        """Every request that touches files needs a login first."""
        protocol, transport = connect(make(self.tree()))
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

    def test_one_answer_for_unknown_user_and_wrong_password(self) -> None:
        """A wrong password and a missing user look the same; neither password is logged."""
        protocol, transport = connect(make(self.tree()))
        with capturedLogs() as events:
            wrong = ask(protocol, transport, b"LOGIN alice secret-guess-1\n")
            missing = ask(protocol, transport, b"LOGIN mallory secret-guess-2\n")
            ok = ask(protocol, transport, b"LOGIN alice apw\n")
        assert wrong == missing == [b"ERR unauthorized bad user name or password"]
        assert ok == [b"OK welcome alice"]
        text = repr([dict(e) for e in events])
        assert "secret-guess" not in text and "apw" not in text
        assert "LOGIN alice ****" in text

    def test_accounts_are_confined_to_their_roots_with_their_rights(self) -> None:
        """alice sees only her root and may write; bob only his, read-only; carol, unlisted,
        nothing."""
        factory = make(self.tree())
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
        assert ask(carol, carol_t, b"LOGIN carol cpw\n") == [
            b"ERR unauthorized bad user name or password"
        ]
        assert ask(carol, carol_t, b"GET public.txt\n")[0].startswith(b"ERR unauthorized log in")

    def test_anonymous_is_read_only_on_root(self) -> None:
        """With --anonymous, no login reads --root; writes are refused."""
        protocol, transport = connect(make(self.tree(), anonymous=True))
        assert ask(protocol, transport, b"GET public.txt\n") == [b"OK 12", b"for everyone"]
        assert ask(protocol, transport, b"MKDIR x\n")[0].startswith(b"ERR read-only")

    def test_failed_logins_are_limited_per_address(self) -> None:
        """After five failures, LOGIN is refused unchecked until the window passes."""
        clock = task.Clock()
        protocol, transport = connect(make(self.tree(), clock=clock))
        for n in range(5):  # five accounts, so that only the address is being limited
            ask(protocol, transport, b"LOGIN user%d bad\n" % n)
        assert ask(protocol, transport, b"LOGIN alice apw\n") == [
            b"ERR busy too many failed logins from your address; wait 60 s"
        ]
        other, other_t = connect(protocol.factory, host="198.51.100.99")  # another network
        assert ask(other, other_t, b"LOGIN alice apw\n") == [b"OK welcome alice"]
        clock.advance(61)
        assert ask(protocol, transport, b"LOGIN alice apw\n") == [b"OK welcome alice"]

    def test_login_without_accounts(self) -> None:
        """LOGIN on a server without --auth is a harmless bad-request."""
        (self.tmp_path / "f").write_bytes(b"x")
        from tests.files.helpers import make_factory

        protocol, transport = connect(make_factory(self.tmp_path))
        assert ask(protocol, transport, b"LOGIN a b\n")[0].startswith(b"ERR bad-request")
        assert ask(protocol, transport, b"GET f\n") == [b"OK 1", b"x"]

    def test_realm_shares_stores_per_root(self) -> None:
        """Two accounts on one root share its store (hash cache) and its upload registry."""
        root, _ = self.tree()
        base = Root.at(str(root))
        realm = FilesRealm(base, True, {}, 1 << 20, inline)
        one, two = realm.account("x"), realm.account("y")
        assert one.store is two.store and one.uploads is two.uploads
        assert realm.account(ANONYMOUS).uploads is None
        assert os.path.samefile(one.store.root.real, root)


# Issue 10, items 7 (deny by default) and 9 (login limits per network and account, bounded).


class NetworkTests(SynchronousTestCase):
    """Which addresses count together."""

    def test_ipv4_by_24_ipv6_by_64_mapped_as_ipv4(self):
        """IPv4 groups by /24, IPv6 by /64, an IPv4-mapped IPv6 address as its IPv4 /24."""
        self.assertEqual(network_of("192.0.2.7"), "192.0.2.0/24")
        self.assertEqual(network_of("192.0.2.250"), network_of("192.0.2.1"))
        self.assertNotEqual(network_of("192.0.3.1"), network_of("192.0.2.1"))
        self.assertEqual(network_of("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64")
        self.assertEqual(network_of("2001:db8:1:2::ffff"), network_of("2001:db8:1:2:1::1"))
        self.assertNotEqual(network_of("2001:db8:1:3::1"), network_of("2001:db8:1:2::1"))
        self.assertEqual(network_of("::ffff:192.0.2.99"), "192.0.2.0/24")
        self.assertEqual(network_of("fe80::1%eth0"), "fe80::/64")

    def test_not_an_ip_address_is_its_own_key(self):
        """A UNIX socket's key (no host) is kept as it is."""
        self.assertEqual(network_of("UNIXAddress"), "UNIXAddress")


class LimiterTests(SynchronousTestCase):
    """LoginLimiter: per network, per account across addresses, expiry, bounded memory."""

    def make(self, **settings) -> tuple[task.Clock, LoginLimiter]:
        clock = task.Clock()
        return clock, LoginLimiter(clock.seconds, **settings)

    def test_addresses_of_one_network_share_a_limit(self):
        """Five failures from five addresses of one /24 stop a sixth; another /24 goes on."""
        clock, limiter = self.make(attempts=5, window=60)
        for n in range(5):
            limiter.failed(f"192.0.2.{n + 1}", f"user{n}")
            clock.advance(1)
        self.assertEqual(limiter.wait("192.0.2.200", "someone"), 55)
        self.assertEqual(limiter.wait("::ffff:192.0.2.201", "someone"), 55)
        self.assertEqual(limiter.wait("192.0.3.1", "someone"), 0)

    def test_one_ipv6_64_shares_a_limit(self):
        """An IPv6 client cannot escape the limit by changing the low 64 bits."""
        clock, limiter = self.make(attempts=3)
        for n in range(3):
            limiter.failed(f"2001:db8:0:1::{n + 1:x}", f"user{n}")
        self.assertGreater(limiter.wait("2001:db8:0:1:ffff::9", "x"), 0)
        self.assertEqual(limiter.wait("2001:db8:0:2::1", "x"), 0)

    def test_account_backs_off_across_addresses(self):
        """After K failures for one account from anywhere, each try waits 1, 2, 4... s, capped."""
        clock, limiter = self.make(account_attempts=3, base_delay=1, max_delay=8)
        networks = (f"10.{n}.0.1" for n in range(100))  # a new network for every try
        for _ in range(3):
            self.assertEqual(limiter.wait(next(networks), "alice"), 0)
            limiter.failed(next(networks), "alice")
        waits = []
        for _ in range(6):
            waits.append(limiter.wait(next(networks), "alice"))
            self.assertEqual(limiter.wait(next(networks), "bob"), 0)  # only alice waits
            clock.advance(waits[-1])
            self.assertEqual(limiter.wait(next(networks), "alice"), 0)
            limiter.failed(next(networks), "alice")
        self.assertEqual(waits, [1, 2, 4, 8, 8, 8])

    def test_wait_is_rounded_up(self):
        """A wait under a second says 1 s, not 0 s."""
        clock, limiter = self.make(account_attempts=1, base_delay=1)
        limiter.failed("192.0.2.1", "alice")
        clock.advance(0.7)
        self.assertEqual(limiter.wait("198.51.100.1", "alice"), 1)

    def test_entries_expire(self):
        """A network is forgotten a window after its last failure, an account after ``forget``."""
        clock, limiter = self.make(attempts=2, window=60, account_attempts=2, forget=600)
        for _ in range(2):
            limiter.failed("192.0.2.1", "alice")
        self.assertEqual(len(limiter), 2)
        clock.advance(60)
        self.assertEqual(limiter.wait("192.0.2.1", "nobody"), 0)
        self.assertEqual(len(limiter), 1)  # the account is still remembered
        clock.advance(540)
        self.assertEqual(limiter.wait("198.51.100.1", "alice"), 0)
        self.assertEqual(len(limiter), 0)

    def test_memory_is_capped(self):
        """100,000 failures from distinct networks for distinct names: never over max_keys."""
        clock, limiter = self.make(max_keys=1000)
        largest = 0
        for n in range(100_000):
            limiter.failed(f"{10 + n // 65536}.{n // 256 % 256}.{n % 256}.1", f"name{n}")
            largest = max(largest, len(limiter))
            clock.advance(0.0001)
        self.assertLessEqual(largest, 1000)
        self.assertEqual(len(limiter), 1000)
        self.assertEqual(limiter.wait("203.0.113.9", "newcomer"), 0)  # full: nobody locked out

    def test_full_limiter_forgets_light_entries_first(self):
        """A flood of new keys does not make the limiter forget an account being limited."""
        clock, limiter = self.make(max_keys=100, account_attempts=3, forget=3600)
        for n in range(3):
            limiter.failed(f"192.0.2.{n}", "alice")
        for n in range(10_000):
            clock.advance(0.01)
            limiter.failed(f"{10 + n // 65536}.{n // 256 % 256}.{n % 256}.1", f"junk{n}")
        self.assertLessEqual(len(limiter), 100)
        limiter.failed("203.0.113.1", "alice")  # the fourth in a row, if alice was remembered
        self.assertEqual(limiter.wait("198.51.100.1", "alice"), 2)

    def test_long_names_cost_no_more(self):
        """Names are tracked by a bounded key."""
        _, limiter = self.make()
        limiter.failed("192.0.2.1", "x" * 100_000)
        self.assertTrue(all(len(key) <= 128 for key in limiter._accounts.light))


def users_file(tmp_path, text: str) -> Users:
    root = tmp_path / "files"
    for name in ("alice", "bob", "sub"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "sub" / "s.txt").write_bytes(b"sub")
    users = tmp_path / "users"
    users.write_text(text)
    return parse_users(str(users), Root.at(str(root)))


class UsersFileTests(SynchronousTestCase):
    """The ``*`` and ``anonymous`` lines of a users file, and its mistakes."""

    def setUp(self):
        self.tmp = temporary_directory(self)

    def test_star_and_anonymous_lines(self):
        """``*`` is every other account, ``anonymous`` anonymous access; neither is a name."""
        users = users_file(self.tmp, "alice alice rw\n* sub ro\nanonymous bob ro\n")
        self.assertEqual(list(users.grants), ["alice"])
        self.assertTrue(users.default.root.real.endswith("/sub") and not users.default.writable)
        self.assertTrue(users.anonymous.root.real.endswith("/bob"))
        self.assertEqual(users.grant("carol"), users.default)
        self.assertEqual(users.grant(ANONYMOUS), users.anonymous)

    def test_mistakes(self):
        """Anonymous may not write; ``*`` and ``anonymous`` may appear once; lines are counted."""
        for text, message in [
            ("anonymous sub rw\n", ":1: anonymous access is read-only"),
            ("* sub ro\n* alice rw\n", r":2: \* is listed twice"),
            ("anonymous sub ro\nanonymous bob ro\n", ":2: anonymous is listed twice"),
            ("* sub\n", ":1: expected NAME ROOT ro|rw"),
        ]:
            with self.assertRaisesRegex(ValueError, message):
                users_file(self.tmp, text)


class DenyByDefaultTests(SynchronousTestCase):
    """The realm behind the portal: both files LOGIN and chat /login go through it."""

    def setUp(self):
        self.tmp = temporary_directory(self)

    def portal(self, users, anonymous=False, writable=True):
        base = Root.at(str(self.tmp / "files")) if users else Root.at(str(self.tmp))
        realm = FilesRealm(base, writable, users, 1 << 20, inline)
        checker = strcred.makeChecker("memory:alice:apw:carol:cpw:anonymous:npw")
        return make_portal(realm, [checker], anonymous)

    def login(self, portal, name, password):
        creds = password_credentials(name, password)
        return portal.login(creds, None, IFilesAccount)

    def test_unlisted_account_is_refused_like_a_bad_password(self):
        """carol's right password, not in the users file: UnauthorizedLogin, as a wrong one."""
        portal = self.portal(users_file(self.tmp, "alice alice rw\n"))
        self.successResultOf(self.login(portal, "alice", "apw"))
        self.failureResultOf(self.login(portal, "carol", "cpw"), error.UnauthorizedLogin)
        self.failureResultOf(self.login(portal, "carol", "wrong"), error.UnauthorizedLogin)
        self.failureResultOf(self.login(portal, "anonymous", "npw"), error.UnauthorizedLogin)

    def test_star_covers_every_other_account(self):
        """``* sub ro``: carol reads sub and may not write; alice keeps her own line."""
        portal = self.portal(users_file(self.tmp, "alice alice rw\n* sub ro\n"))
        _, carol, _ = self.successResultOf(self.login(portal, "carol", "cpw"))
        self.assertTrue(carol.store.root.real.endswith("/sub"))
        self.assertIsNone(carol.uploads)
        _, alice, _ = self.successResultOf(self.login(portal, "alice", "apw"))
        self.assertTrue(alice.store.root.real.endswith("/alice"))
        self.assertIsNotNone(alice.uploads)

    def test_anonymous_reads_its_line_only(self):
        """Anonymous access gets the ``anonymous`` line's root, read-only; none without one."""
        from twisted.cred.credentials import Anonymous

        users = users_file(self.tmp, "alice alice rw\n* sub rw\nanonymous bob ro\n")
        portal = self.portal(users, anonymous=True)
        _, anon, _ = self.successResultOf(portal.login(Anonymous(), None, IFilesAccount))
        self.assertEqual((anon.name, anon.uploads), (ANONYMOUS, None))
        self.assertTrue(anon.store.root.real.endswith("/bob"))
        _, named, _ = self.successResultOf(self.login(portal, "anonymous", "npw"))
        self.assertTrue(named.store.root.real.endswith("/bob"))  # not the writable * line
        portal = self.portal(users_file(self.tmp, "* sub rw\n"), anonymous=True)
        self.failureResultOf(
            portal.login(Anonymous(), None, IFilesAccount), error.UnauthorizedLogin
        )

    def test_without_users_file_every_account_gets_root(self):
        """No --users: as before, any account reaches --root with --writable's rights."""
        portal = self.portal(None, writable=True)
        _, carol, _ = self.successResultOf(self.login(portal, "carol", "cpw"))
        self.assertEqual(os.path.realpath(carol.store.root.real), os.path.realpath(self.tmp))
        self.assertIsNotNone(carol.uploads)

    def test_factory_refuses_anonymous_without_its_line(self):
        """Embedding: anonymous access with a users file lacking ``anonymous`` is an error."""
        from tcpfiles.files.factory import make_files_factory

        users = users_file(self.tmp, "alice alice rw\n")
        checkers_ = [strcred.makeChecker("memory:alice:apw")]
        with self.assertRaisesRegex(ValueError, "anonymous ROOT ro"):
            make_files_factory(
                self.tmp / "files", task.Clock(), checkers=checkers_, grants=users, anonymous=True
            )

    def test_options_check_anonymous_against_the_users_file(self):
        """--anonymous and an ``anonymous`` line go together, at start."""
        from twisted.python import usage

        from tcpfiles import tap

        root = self.tmp / "files"
        users_file(self.tmp, "alice alice rw\n")
        base = [
            "--root",
            str(root),
            "--auth",
            "memory:alice:apw",
            "--users",
            str(self.tmp / "users"),
        ]
        with self.assertRaisesRegex(usage.UsageError, "no 'anonymous ROOT ro' line"):
            tap.Options().parseOptions([*base, "--anonymous"])
        users_file(self.tmp, "anonymous sub ro\n")
        with self.assertRaisesRegex(usage.UsageError, "--anonymous is not given"):
            tap.Options().parseOptions(base)
        options = tap.Options()
        options.parseOptions([*base, "--anonymous"])
        self.assertTrue(options["grants"].anonymous.root.real.endswith("/sub"))


class LoginOnTheWireTests(SynchronousTestCase):
    """Files LOGIN and chat /login: the refusal and the limits, whole and byte by byte."""

    def setUp(self):
        self.tmp = temporary_directory(self)
        self.clock = task.Clock()
        users = users_file(self.tmp, "alice alice rw\n")
        base = Root.at(str(self.tmp / "files"))
        realm = FilesRealm(base, True, users, 1 << 20, inline)
        self.portal = make_portal(realm, [strcred.makeChecker("memory:alice:apw:carol:cpw")], False)
        store, _ = realm.store_for(base)
        self.files = FileServerFactory(store, self.clock, Limits(), None, self.portal)

    def feed(self, protocol, transport, data: bytes, byte_by_byte: bool) -> list[bytes]:
        transport.clear()
        for piece in [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]:
            protocol.dataReceived(piece)
        pump(transport)
        return transport.value().splitlines()

    def test_unlisted_account_gets_the_bad_password_answer_and_counts(self):
        """carol (right password, unlisted) is answered as a bad password and counted as one."""
        for byte_by_byte in (False, True):
            self.setUp()
            protocol, transport = connect(self.files)
            bad = self.feed(protocol, transport, b"LOGIN alice nope\n", byte_by_byte)
            for _ in range(4):
                carol = self.feed(protocol, transport, b"LOGIN carol cpw\n", byte_by_byte)
                self.assertEqual(carol, bad)
            self.assertEqual(bad, [b"ERR unauthorized bad user name or password"])
            self.assertEqual(
                self.feed(protocol, transport, b"LOGIN alice apw\n", byte_by_byte),
                [b"ERR busy too many failed logins from your address; wait 60 s"],
            )

    def test_account_back_off_on_the_wire_from_another_network(self):
        """Failures for alice from one network make alice wait from another, same wire text."""
        for n in range(5):
            protocol, transport = connect(self.files, host=f"10.{n}.0.1")
            self.feed(protocol, transport, b"LOGIN alice nope\n", False)
        protocol, transport = connect(self.files, host="198.51.100.1")
        self.assertEqual(
            self.feed(protocol, transport, b"LOGIN alice apw\n", True),
            [b"ERR busy too many failed logins from your address; wait 1 s"],
        )
        self.assertEqual(
            self.feed(protocol, transport, b"LOGIN carol x\n", False)[0][:16], b"ERR unauthorized"
        )
        self.clock.advance(1)
        self.assertEqual(
            self.feed(protocol, transport, b"LOGIN alice apw\n", False), [b"OK welcome alice"]
        )

    def test_chat_login_refuses_unlisted_and_is_limited(self):
        """chat /login: carol unlisted gets the bad-password line; the limiter takes the name."""
        from tcpfiles.chat.plugin import ChatOptions
        from tcpfiles.chat.protocol import ChatFactory

        options = ChatOptions()
        options.parseOptions([])
        chat = ChatFactory(self.clock, options, self.portal)
        protocol, transport = connect(chat)
        transport.clear()
        for piece in [b"/login carol cpw\n"[i : i + 1] for i in range(17)]:
            protocol.dataReceived(piece)
        self.assertEqual(transport.value(), b"!!! bad user name or password\n")
        for _ in range(4):
            protocol.dataReceived(b"/login carol cpw\n")
        transport.clear()
        protocol.dataReceived(b"/login alice apw\n")
        self.assertIn(b"!!! too many failed logins from your address; wait 60 s", transport.value())
        other, other_t = connect(chat, host="198.51.100.1")
        other.dataReceived(b"/login alice apw\n")
        self.assertIn(b"*** welcome, alice", other_t.value())


class LimiterCompatibilityTests(SynchronousTestCase):
    """Third-party behaviours written against ``wait(peer)``/``failed(peer)`` keep working."""

    def test_without_an_account_only_the_network_counts(self):
        """No account name: the network limit still applies, no account is tracked."""
        clock = task.Clock()
        limiter = LoginLimiter(clock.seconds, attempts=2)
        limiter.failed("192.0.2.1")
        limiter.failed("192.0.2.2")
        self.assertEqual(limiter.wait("192.0.2.3"), 60)
        self.assertEqual(len(limiter), 1)


class ServerAccountsTests(SynchronousTestCase):
    """make_accounts builds the accounts once; the files factory takes them from its Context."""

    def setUp(self):
        self.tmp = temporary_directory(self)
        self.users = users_file(self.tmp, "alice alice rw\nanonymous sub ro\n")
        self.accounts = make_accounts(
            str(self.tmp / "files"),
            task.Clock(),
            writable=True,
            checkers=[strcred.makeChecker("memory:alice:apw")],
            users=self.users,
            anonymous=True,
            hasher=Hasher(inline),
        )

    def test_context_carries_the_whole_server(self):
        """The server's context: --root, --writable, the portal, the limiter and the realm."""
        clock = task.Clock()
        context = self.accounts.context(clock)
        self.assertIs(context.reactor, clock)
        self.assertEqual(context.root.real, os.path.realpath(self.tmp / "files"))
        self.assertTrue(context.writable)
        self.assertIs(context.portal, self.accounts.portal)
        self.assertIs(context.limiter, self.accounts.limiter)
        self.assertIs(context.realm, self.accounts.realm)

    def test_anonymous_root_is_the_anonymous_line(self):
        """The anonymous view is the users file's anonymous root; without --anonymous, none."""
        self.assertEqual(anonymous_root(self.accounts.portal).real, self.users.anonymous.root.real)
        closed = make_accounts(
            str(self.tmp / "files"),
            task.Clock(),
            checkers=[strcred.makeChecker("memory:alice:apw")],
            users=self.users,
            hasher=Hasher(inline),
        )
        self.assertIsNone(anonymous_root(closed.portal))

    def test_files_factory_shares_the_realm_and_the_limiter(self):
        """factory_for uses the realm's store and limiter: one of each for the whole server."""
        context = self.accounts.context(task.Clock())
        files = factory_for(context)
        realm = self.accounts.realm
        self.assertIs(files.store, realm.store_for(context.root)[0])
        self.assertIs(files.uploads, realm.store_for(context.root)[1])
        self.assertIs(files.limiter, self.accounts.limiter)
        self.assertIs(files.portal, self.accounts.portal)
        self.assertEqual(files.default_account.name, ANONYMOUS)
        self.assertIs(files.default_account.store, realm.store_for(self.users.anonymous.root)[0])
        self.assertIsNone(files.default_account.uploads)

    def test_hand_made_context_gets_accounts_of_its_own(self):
        """A Context made by hand (no realm): the root, read-only, no logins."""
        reactor = MemoryReactorClock()  # its accounts start a hashing pool with the reactor
        files = factory_for(Context(reactor, Root.at(str(self.tmp / "files"))))
        self.assertIsNone(files.portal)
        self.assertIsNone(files.uploads)
        self.assertEqual(files.store.root.real, os.path.realpath(self.tmp / "files"))
        with self.assertRaisesRegex(ValueError, "files needs a root"):
            factory_for(Context(reactor, None))

    def test_failed_logins_on_files_count_on_chat(self):
        """One limiter for the server: guessing on files makes chat's /login wait too."""
        from tcpfiles.chat.plugin import ChatOptions
        from tcpfiles.chat.protocol import ChatFactory

        clock = task.Clock()
        context = self.accounts.context(clock)
        files = factory_for(context)
        options = ChatOptions()
        options.parseOptions([])
        chat = ChatFactory(clock, options, context.portal, context.limiter)
        for _ in range(5):
            protocol, transport = connect(files)
            protocol.dataReceived(b"LOGIN alice nope\n")
        protocol, transport = connect(chat)
        transport.clear()
        protocol.dataReceived(b"/login alice apw\n")
        self.assertIn(b"!!! too many failed logins from your address; wait 60 s", transport.value())
