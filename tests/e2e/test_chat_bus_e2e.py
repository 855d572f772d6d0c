"""One chat room over two twistd processes and a real redis-server (``--chat-bus``)."""

from __future__ import annotations

import os
import signal
import time

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Twistd, Wire
from tests.e2e.redis_server import RedisServer

SPANS = "the room spans processes"


class ChatBusTests(E2ETestCase):
    def setUp(self) -> None:
        super().setUp()
        self.redis = RedisServer(self.tmp_path)
        self.redis.start()
        self.addCleanup(self.redis.stop)

    def node(self) -> tuple[Twistd, int]:
        server = self.start_server(
            "--serve", "chat=tcp:0:interface=127.0.0.1", "--chat-bus", self.redis.url
        )
        server.wait_for(SPANS)
        return server, server.port_of("chat")

    def user(self, port: int, nick: str) -> Wire:
        wire = Wire(port)
        assert wire.line().startswith(b"*** tcpfiles chat")
        wire.send(f"/nick {nick}\n".encode())
        assert wire.line().startswith(f"*** welcome, {nick}".encode())
        return wire

    def test_one_room_over_two_processes(self) -> None:
        """A line said on A arrives on B once; a nick held on A is refused on B; a newcomer on
        B gets A's lines as history, and sees and reaches A's users (/who, /msg)."""
        (_, port_a), (_, port_b) = self.node(), self.node()
        bob = self.user(port_b, "bob")
        ann = self.user(port_a, "ann")
        assert bob.line() == b"*** ann joined"
        ann.send(b"hello from A\n")
        assert bob.line() == b"<ann> hello from A"
        ann.send(b"second\n")
        assert bob.line() == b"<ann> second"  # not the first one again
        imposter = Wire(port_b)
        imposter.line()
        imposter.send(b"/nick ANN\n")
        assert imposter.line() == b"!!! the nick ANN is taken"
        carol = self.user(port_b, "carol")
        assert [carol.line(), carol.line()] == [b"<ann> hello from A", b"<ann> second"]
        assert ann.line() == b"*** carol joined"
        carol.send(b"/who\n")
        assert carol.line() == b"*** 3 here: ann, bob, carol"
        carol.send(b"/msg ANN psst\n")
        assert ann.line() == carol.line() == b"[carol -> ann] psst"
        assert bob.line() == b"*** carol joined"

    def test_room_heals_after_redis_restart(self) -> None:
        """redis-server stopped and started again on its port: each node says so once, the
        users of A still talk meanwhile, and after the restart B hears A again (with what
        was said while the bus was down), without restarting tcpfiles."""
        (a, port_a), (b, port_b) = self.node(), self.node()
        bob = self.user(port_b, "bob")
        ann = self.user(port_a, "ann")
        dave = self.user(port_a, "dave")
        assert bob.line() == b"*** ann joined"
        assert bob.line() == b"*** dave joined"
        assert ann.line() == b"*** dave joined"
        self.redis.stop()
        a.wait_for("is unreachable")
        b.wait_for("is unreachable")
        ann.send(b"while down\n")
        assert dave.line() == b"<ann> while down"
        self.redis.start()
        a.wait_for(r"reached after .*re-claimed 2 nick")
        b.wait_for(r"reached after .*re-claimed 1 nick")
        ann.send(b"after restart\n")
        assert dave.line() == b"<ann> after restart"
        assert bob.line() == b"<ann> while down"
        assert bob.line() == b"<ann> after restart"
        imposter = Wire(port_b)
        imposter.line()
        imposter.send(b"/nick dave\n")
        assert imposter.line() == b"!!! the nick dave is taken"
        assert a.text().count("is unreachable") == 1

    def test_stalled_redis(self) -> None:
        """redis-server stopped (SIGSTOP) with its sockets open: a newcomer's /nick is
        decided here within a few seconds, the node says once that Redis does not answer, the
        users talk on; after SIGCONT the room spans processes again, with what was said."""
        (a, port_a), (_, port_b) = self.node(), self.node()
        carol = self.user(port_b, "carol")
        ann = self.user(port_a, "ann")
        assert carol.line() == b"*** ann joined"
        pid = self.redis.pid()
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(os.kill, pid, signal.SIGCONT)  # before it is stopped (last first)
        bob = Wire(port_a, timeout=15.0)
        assert bob.line().startswith(b"*** tcpfiles chat")
        started = time.monotonic()
        bob.send(b"/nick bob\n")
        assert bob.line().startswith(b"*** welcome, bob")
        waited = time.monotonic() - started
        assert 2.5 < waited < 8.0, waited  # the timeout (3 s), not sooner, not forever
        a.wait_for(r"is unreachable \(no answer in 3 s\)")
        assert ann.line() == b"*** bob joined"
        bob.send(b"while stalled\n")
        assert ann.line() == b"<bob> while stalled"
        os.kill(pid, signal.SIGCONT)
        a.wait_for(r"reached after .*re-claimed 2 nick")
        bob.send(b"after\n")
        assert ann.line() == b"<bob> after"
        assert carol.line() == b"<bob> while stalled"
        assert carol.line() == b"<bob> after"
        assert a.text().count("is unreachable") == 1
