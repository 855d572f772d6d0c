"""The chat protocol on fake transports: lines, UTF-8, limits, slow readers, shutdown."""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.chat.plugin import ChatOptions
from tcpfiles.chat.protocol import GREETING, ChatFactory
from tcpfiles.testing import connect, guarded


def make_factory(clock=None, **settings):
    options = ChatOptions()
    options.parseOptions([f"--{k.replace('_', '-')}={v}" for k, v in settings.items()])
    return ChatFactory(clock or task.Clock(), options)


def lines(transport):
    out = transport.value().decode("utf-8").splitlines()
    transport.clear()
    return out


def make_with_accounts(clock=None):
    import tempfile

    from twisted.cred import strcred

    from tcpfiles.core.auth import make_portal
    from tcpfiles.tree.accounts import FilesRealm
    from tcpfiles.tree.paths import Root

    realm = FilesRealm(Root.at(tempfile.gettempdir()), False, {}, 1, lambda f, *a: None)
    portal = make_portal(realm, [strcred.makeChecker("memory:alice:apw:bob:bpw")], False)
    options = ChatOptions()
    options.parseOptions([])
    return ChatFactory(clock or task.Clock(), options, portal)


class ChatProtocolTests(SynchronousTestCase):
    """The chat protocol on fake transports."""

    def test_session_whole_and_byte_by_byte(self) -> None:
        """The same bytes give the same room lines whole or one byte at a time."""
        for byte_by_byte in (False, True):
            factory = make_factory()
            ann, ann_t = connect(factory, port=1)
            bob, bob_t = connect(factory, port=2)
            for who, data in ((ann, b"/nick ann\r\n"), (bob, b"/nick bob\n"), (ann, b"hi bob\n")):
                pieces = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
                for piece in pieces:
                    who.dataReceived(piece)
            assert lines(bob_t)[-1] == "<ann> hi bob"
            assert lines(ann_t)[0] == GREETING

    def test_invalid_utf8_is_replaced_not_fatal(self) -> None:
        """Bytes that are not UTF-8 arrive as U+FFFD; the connection stays up."""
        factory = make_factory()
        ann, _ = connect(factory, port=1)
        bob, bob_t = connect(factory, port=2)
        ann.dataReceived(b"/nick ann\n")
        bob.dataReceived(b"/nick bob\n")
        lines(bob_t)
        ann.dataReceived(b"caf\xe9 \xff\n")
        assert lines(bob_t) == ["<ann> caf\ufffd \ufffd"]

    def test_long_line_is_refused_and_skipped(self) -> None:
        """A line over the limit gets a notice; its tail is skipped; the next line works."""
        factory = make_factory(max_line=16)
        ann, ann_t = connect(factory, port=1)
        bob, bob_t = connect(factory, port=2)
        ann.dataReceived(b"/nick ann\n")
        bob.dataReceived(b"/nick bob\n")
        lines(ann_t), lines(bob_t)
        ann.dataReceived(b"x" * 20)
        ann.dataReceived(b"y" * 20 + b"\nshort\n")
        assert lines(ann_t) == ["!!! line too long (max 16 bytes)"]
        assert lines(bob_t) == ["<ann> short"]

    def test_slow_reader_is_dropped_and_nobody_else_loses_a_line(self) -> None:
        """A user whose output piles up past max-queue is disconnected; others get everything."""
        factory = make_factory(max_queue=1000)
        slow, slow_t = connect(factory, port=1)
        fast, fast_t = connect(factory, port=2)
        talker, _ = connect(factory, port=3)
        for who, nick in ((slow, "slow"), (fast, "fast"), (talker, "talker")):
            who.dataReceived(f"/nick {nick}\n".encode())
        lines(fast_t)
        slow.pauseProducing()  # what Twisted does when slow's socket buffer is full
        for n in range(100):
            talker.dataReceived(f"message number {n:03d}\n".encode())
            factory.room._buckets.clear()  # no flood control in this test
        assert slow_t.disconnecting  # aborted
        got = [line for line in lines(fast_t) if line.startswith("<talker>")]
        assert got == [f"<talker> message number {n:03d}" for n in range(100)]
        assert "slow" not in factory.room.members

    def test_drain_notifies_and_closes(self) -> None:
        """On graceful shutdown every user is told, then closed."""
        factory = guarded(make_factory())
        ann, ann_t = connect(factory)
        ann.dataReceived(b"/nick ann\n")
        factory.tracker.drain()
        assert lines(ann_t)[-1] == "*** the server is shutting down"
        assert ann_t.disconnecting

    def test_quit_and_idle_timeout(self) -> None:
        """/quit closes; so does silence past the idle timeout."""
        clock = task.Clock()
        factory = make_factory(clock, idle_timeout=60)
        ann, ann_t = connect(factory, port=1)
        ann.dataReceived(b"/quit\n")
        assert ann_t.disconnecting
        bob, bob_t = connect(factory, port=2)
        clock.advance(59)
        bob.dataReceived(b"/nick bob\n")
        clock.advance(59)
        assert not bob_t.disconnecting
        clock.advance(1)
        assert bob_t.disconnecting
        assert lines(bob_t)[-1] == "*** idle for 60 s; closing"

    def test_connection_lost_leaves_the_room(self) -> None:
        """A dropped connection is announced as a leave."""
        factory = guarded(make_factory())
        ann, ann_t = connect(factory, port=1)
        bob, bob_t = connect(factory, port=2)
        ann.dataReceived(b"/nick ann\n")
        bob.dataReceived(b"/nick bob\n")
        lines(ann_t)
        bob.connectionLost(None)
        assert lines(ann_t) == ["*** bob left (connection lost)"]
        assert not factory.tracker.active.get(bob)

    def test_with_accounts_nicks_are_account_names(self) -> None:
        """Under --auth: /login joins as the account; /nick and talking before a login are
        refused."""
        factory = make_with_accounts()
        ann, ann_t = connect(factory, port=1)
        assert lines(ann_t) == [
            "*** tcpfiles chat: /login NAME PASSWORD to join, /help for commands"
        ]
        ann.dataReceived(b"hello\n/nick alice\n/login alice wrong\n")
        assert lines(ann_t) == [
            "!!! log in first: /login NAME PASSWORD",
            "!!! nicks are account names here: /login NAME PASSWORD",
            "!!! bad user name or password",
        ]
        ann.dataReceived(b"/login alice apw\n")
        assert lines(ann_t)[0].startswith("*** welcome, alice")
        impostor, impostor_t = connect(factory, port=2)
        impostor.dataReceived(b"/nick alice\n/login bob bpw\n/nick alice\n")
        assert lines(impostor_t)[1:] == [
            "!!! nicks are account names here: /login NAME PASSWORD",
            "*** welcome, bob; 2 here. /help for commands",
            "!!! nicks are account names here: /login NAME PASSWORD",
        ]
        assert sorted(factory.room.members) == ["alice", "bob"]
