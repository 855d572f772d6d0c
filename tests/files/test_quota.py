"""Storage quotas: refused before the body, uploads in flight held against the quota, holds
released on failure, replacements counting the difference, and the users file's fields."""

from __future__ import annotations

import hashlib
import os

from twisted.cred import strcred
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.core.auth import make_portal, password_credentials
from tcpfiles.files.factory import factory_for
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.testing import connect, pump, respond
from tcpfiles.tree import quota as quota_module
from tcpfiles.tree.accounts import FilesRealm, make_accounts, parse_users
from tcpfiles.tree.hashing import Hasher, inline
from tcpfiles.tree.interfaces import IFilesAccount
from tcpfiles.tree.paths import Root
from tcpfiles.tree.quota import OverQuota, Quota, Uncountable, Usage, count_usage
from tcpfiles.tree.store import FileStore
from tcpfiles.tree.uploads import Uploads
from tests.helpers import cases, temporary_directory, with_cases


def put_line(body: bytes, name: bytes, verb: bytes = b"PUT") -> bytes:
    return b"%s %d %s %s\n" % (verb, len(body), hashlib.sha256(body).hexdigest().encode(), name)


@with_cases
class QuotaOnTheWireTests(SynchronousTestCase):
    """A files server whose one account may store 1000 bytes; 600 are there already."""

    def setUp(self) -> None:
        self.root = temporary_directory(self) / "files"
        (self.root / "sub").mkdir(parents=True)
        (self.root / "old.bin").write_bytes(b"o" * 500)
        (self.root / "sub" / "more.bin").write_bytes(b"m" * 100)
        served = Root.at(str(self.root))
        self.usage = Usage(served)
        uploads = Uploads(served, 1 << 20, inline)
        self.factory = FileServerFactory(
            FileStore(served, inline),
            task.Clock(),
            Limits(),
            uploads,
            quota=Quota(1000, self.usage),
        )

    @cases(whole=(False,), byte_by_byte=(True,))
    def test_refused_before_the_body(self, byte_by_byte) -> None:
        """A PUT that would pass the quota is answered over-quota at once, never ``OK send``;
        the connection goes on."""
        protocol, transport = connect(self.factory)
        out = respond(protocol, transport, put_line(b"x" * 401, b"new.bin"), byte_by_byte)
        assert out.startswith(b"ERR over-quota 401 bytes would take your account over its quota")
        assert b"(600 stored, 0 in uploads under way)" in out and b"OK send" not in out
        assert not transport.disconnecting and not (self.root / "new.bin").exists()
        out = respond(protocol, transport, put_line(b"x" * 400, b"new.bin") + b"x" * 400)
        assert out.startswith(b"OK send 400\nOK stored 400 ")
        assert self.usage.used == 1000 and self.usage.held == 0

    def test_replace_counts_the_difference(self) -> None:
        """Replacing old.bin (500 bytes) with 900 adds 400: it fits; then the usage is exact."""
        protocol, transport = connect(self.factory)
        body = b"r" * 900
        out = respond(protocol, transport, put_line(body, b"old.bin", b"REPLACE") + body)
        assert out.startswith(b"OK send 900\nOK stored 900 "), out
        assert self.usage.used == 1000
        shrink = b"s" * 10
        out = respond(protocol, transport, put_line(shrink, b"old.bin", b"REPLACE") + shrink)
        assert b"OK stored 10 " in out and self.usage.used == 110

    @cases(whole=(False,), byte_by_byte=(True,))
    def test_replacing_a_symlink_counts_the_whole_body(self, byte_by_byte) -> None:
        """REPLACE over a link to old.bin (500 bytes) replaces the link, not old.bin: the body
        is added whole, so 500 bytes do not fit in the 400 left, and 400 do (exactly)."""
        os.symlink("old.bin", self.root / "link")
        protocol, transport = connect(self.factory)
        body = b"r" * 500
        out = respond(protocol, transport, put_line(body, b"link", b"REPLACE"), byte_by_byte)
        assert out.startswith(b"ERR over-quota 500 bytes"), out
        assert self.usage.held == 0 and (self.root / "link").is_symlink()
        body = b"r" * 400
        out = respond(protocol, transport, put_line(body, b"link", b"REPLACE") + body, byte_by_byte)
        assert out.startswith(b"OK send 400\nOK stored 400 "), out
        assert not (self.root / "link").is_symlink()
        assert (self.root / "old.bin").stat().st_size == 500
        assert self.usage.used == 1000 == count_usage(Root.at(str(self.root)))

    def test_uploads_in_flight_are_held(self) -> None:
        """Two connections at once: the second's PUT finds the first's 300 bytes held."""
        first, first_io = connect(self.factory)
        second, second_io = connect(self.factory)
        assert respond(first, first_io, put_line(b"a" * 300, b"a.bin")) == b"OK send 300\n"
        out = respond(second, second_io, put_line(b"b" * 300, b"b.bin"))
        assert out.startswith(b"ERR over-quota") and b"300 in uploads under way" in out
        assert respond(second, second_io, put_line(b"b" * 100, b"b.bin")) == b"OK send 100\n"
        assert self.usage.held == 400

    @cases(mismatch=("mismatch",), cut_off=("lost",))
    def test_hold_released_when_the_upload_fails(self, how) -> None:
        """A failed upload (a body that does not match, a connection lost mid-body) gives its
        hold back: the same room can be used at once."""
        protocol, transport = connect(self.factory)
        body = b"a" * 400
        respond(protocol, transport, put_line(body, b"a.bin"))
        assert self.usage.held == 400
        if how == "mismatch":
            out = respond(protocol, transport, b"b" * 400)
            assert out.startswith(b"ERR mismatch")
        else:
            protocol.dataReceived(b"a" * 100)
            protocol.connectionLost(None)
        assert self.usage.held == 0 and self.usage.used == 600
        again, io = connect(self.factory)
        assert respond(again, io, put_line(body, b"a.bin") + body).startswith(b"OK send 400\nOK")
        assert self.usage.used == 1000


class CountingTests(SynchronousTestCase):
    """What a root holds: regular files, not symlinks nor upload temporaries; bounded."""

    def test_count_usage(self) -> None:
        root = temporary_directory(self)
        (root / "d").mkdir()
        (root / "d" / "a").write_bytes(b"a" * 10)
        (root / "b").write_bytes(b"b" * 5)
        (root / ".tcpfiles-0123.part").write_bytes(b"t" * 1000)
        os.symlink("/etc/passwd", root / "link")
        assert count_usage(Root.at(str(root))) == 15
        with self.assertRaises(Uncountable):
            count_usage(Root.at(str(root)), limit=3)

    def test_reserve_and_release(self) -> None:
        usage = Usage(Root.at(str(temporary_directory(self))))
        quota = Quota(100, usage)
        assert quota.reserve(60, 0) == 60
        with self.assertRaises(OverQuota):
            quota.reserve(41, 0)
        assert quota.reserve(50, 40) == 10  # a replacement: its difference
        assert quota.reserve(10, 50) == 0  # shrinking holds nothing
        quota.release(60)
        quota.stored(60)
        assert usage.held == 10 and usage.used == 60


@with_cases
class UncountableRootTests(SynchronousTestCase):
    """A root past the count's limit: uploads are answered busy without walking it again, until
    a recount (a minute later, in the thread pool) finds it countable."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.root = temporary_directory(self) / "files"
        self.root.mkdir()
        for i in range(10):
            (self.root / f"f{i}").write_bytes(b"f" * 10)
        self.walks: list[object] = []
        real = quota_module.count_usage

        def counting(root, limit=quota_module.SCAN_LIMIT):
            self.walks.append(root)
            return real(root, limit)

        self.patch(quota_module, "count_usage", counting)
        self.jobs: list[tuple[object, tuple[object, ...], defer.Deferred]] = []

        def in_thread(f, *args):  # a thread pool whose jobs the test runs
            d: defer.Deferred = defer.Deferred()
            self.jobs.append((f, args, d))
            return d

        served = Root.at(str(self.root))
        self.usage = Usage(served, self.clock, in_thread, limit=5)
        self.factory = FileServerFactory(
            FileStore(served, inline),
            self.clock,
            Limits(),
            Uploads(served, 1 << 20, inline),
            quota=Quota(1000, self.usage),
        )

    def put(self, byte_by_byte: bool) -> bytes:
        protocol, transport = connect(self.factory)
        return respond(protocol, transport, put_line(b"x" * 10, b"new.bin"), byte_by_byte)

    def run_jobs(self) -> None:
        jobs, self.jobs = self.jobs, []
        for f, args, d in jobs:
            try:
                d.callback(f(*args))
            except Exception:
                d.errback()

    @cases(whole=(False,), byte_by_byte=(True,))
    def test_not_walked_again_for_every_upload(self, byte_by_byte) -> None:
        for _ in range(3):
            assert self.put(byte_by_byte).startswith(b"ERR busy more than 5 files")
        assert len(self.walks) == 1 and self.jobs == []  # counted once, on the first upload
        self.clock.advance(quota_module.RECOUNT_AFTER)
        assert self.put(byte_by_byte).startswith(b"ERR busy")  # a recount, in the thread pool
        assert len(self.jobs) == 1 and self.put(byte_by_byte).startswith(b"ERR busy")
        assert len(self.jobs) == 1 and len(self.walks) == 1  # one recount at a time
        self.run_jobs()
        assert len(self.walks) == 2 and self.usage.used is None
        assert self.put(byte_by_byte).startswith(b"ERR busy") and self.jobs == []
        for i in range(6):  # the operator clears some out; the next recount finds 40 bytes
            (self.root / f"f{i}").unlink()
        self.clock.advance(quota_module.RECOUNT_AFTER)
        assert self.put(byte_by_byte).startswith(b"ERR busy")
        self.run_jobs()
        assert self.usage.used == 40 and len(self.walks) == 3
        assert self.put(byte_by_byte) == b"OK send 10\n"

    def test_without_a_clock_never_again(self) -> None:
        usage = Usage(Root.at(str(self.root)), limit=5)
        for _ in range(3):
            with self.assertRaises(Uncountable):
                usage.counted()
        assert len(self.walks) == 1


class UsersFileLimitsTests(SynchronousTestCase):
    """``rate=`` and ``quota=`` on users-file lines, ``--quota`` for the others."""

    def setUp(self) -> None:
        self.tmp = temporary_directory(self)
        for name in ("alice", "bob", "pub"):
            (self.tmp / "files" / name).mkdir(parents=True)
        self.base = Root.at(str(self.tmp / "files"))

    def users(self, text: str):
        path = self.tmp / "users"
        path.write_text(text)
        return parse_users(str(path), self.base)

    def test_fields(self) -> None:
        users = self.users(
            "alice alice rw rate=2M quota=1G\nbob bob rw quota=none\n* pub ro rate=512KiB\n"
        )
        assert users.grants["alice"].rate == 2 << 20 and users.grants["alice"].quota == 1 << 30
        assert users.grants["bob"].quota == 0 and users.grants["bob"].rate == 0
        assert users.default is not None and users.default.rate == 512 << 10
        assert users.default.quota is None  # the server's --quota

    def test_mistakes(self) -> None:
        for text, message in [
            ("alice alice rw speed=2M\n", ":1: expected rate=R or quota=Q"),
            ("alice alice rw rate=2M rate=1M\n", ":1: expected rate=R or quota=Q"),
            ("alice alice rw quota=lots\n", ":1: quota: not an amount of bytes"),
        ]:
            with self.assertRaisesRegex(ValueError, message):
                self.users(text)

    def test_realm(self) -> None:
        """Each login of an account gets the same bucket; quotas: its own, else --quota, none
        for read-only accounts; accounts of one root share its usage."""
        clock = task.Clock()
        users = self.users("alice alice rw rate=1M quota=5K\nbob alice rw quota=0\n* pub rw\n")
        realm = FilesRealm(self.base, True, users, 1 << 20, inline, None, clock, 1 << 20)
        checker = strcred.makeChecker("memory:alice:pw:bob:pw:carol:pw")
        portal = make_portal(realm, [checker], False)

        def login(name: str):
            d = portal.login(password_credentials(name, "pw"), None, IFilesAccount)
            return self.successResultOf(d)[1]

        alice, again, bob, carol = login("alice"), login("alice"), login("bob"), login("carol")
        assert alice.bucket is not None and alice.bucket is again.bucket
        assert alice.bucket.rate == 1 << 20 and bob.bucket is None
        assert alice.quota.limit == 5 << 10 and bob.quota is None
        assert carol.quota.limit == 1 << 20  # --quota
        assert alice.quota.usage is again.quota.usage

    def test_make_accounts_quota_without_logins(self) -> None:
        """Without --auth, --quota applies to the one account every connection shares."""
        reactor = task.Clock()
        accounts = make_accounts(
            str(self.tmp / "files"), reactor, writable=True, quota=1000, hasher=Hasher(inline)
        )
        factory = factory_for(accounts.context(reactor))
        assert factory.default_account.quota.limit == 1000
        protocol, transport = connect(factory)
        protocol.dataReceived(put_line(b"x" * 1001, b"big"))
        pump(transport)
        assert transport.value().startswith(b"ERR over-quota")

    def test_anonymous_line_rate_is_shared(self) -> None:
        """``anonymous pub ro rate=1M``: anonymous connections (no LOGIN) draw on one bucket."""
        users = self.users("alice alice rw\nanonymous pub ro rate=1M\n")
        checker = strcred.makeChecker("memory:alice:pw")
        reactor = task.Clock()
        accounts = make_accounts(
            str(self.tmp / "files"),
            reactor,
            checkers=[checker],
            users=users,
            anonymous=True,
            hasher=Hasher(inline),
        )
        factory = factory_for(accounts.context(reactor))
        one, _ = connect(factory)
        two, _ = connect(factory)
        assert one.account.name == "anonymous" and one.account.bucket is not None
        assert one.pace().buckets == two.pace().buckets == (one.account.bucket,)
