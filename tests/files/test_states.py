"""The files server's connection as explicit states: each request kind has its handler, each
state holds its own timer, and the connection goes back to waiting after every answer."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import typing

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files import wire
from tcpfiles.files.handlers import ROUTES
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.testing import connect, pump
from tcpfiles.tree.paths import Root
from tcpfiles.tree.store import FileStore
from tcpfiles.tree.uploads import Uploads


class RoutesTests(SynchronousTestCase):
    """The dispatch table and the wire format agree."""

    def test_every_request_has_a_handler(self) -> None:
        """Each kind of request parse_request can give is routed (a request added to the wire
        without a handler fails here)."""
        self.assertEqual(set(ROUTES), set(typing.get_args(wire.Request)))

    def test_who_may_send_what(self) -> None:
        """Before LOGIN only LOGIN, HELP, QUIT and bad requests are answered; PUT, REPLACE
        and MKDIR need uploads."""
        early = {kind for kind, route in ROUTES.items() if route.before_login}
        self.assertEqual(early, {wire.Login, wire.Help, wire.Quit, wire.BadRequest})
        self.assertEqual({k for k, r in ROUTES.items() if r.writes}, {wire.Put, wire.Mkdir})


class StateTests(SynchronousTestCase):
    """Where the connection is, request by request, and the one timer it holds."""

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root)
        with open(os.path.join(self.root, "big.bin"), "wb") as f:
            f.truncate(1 << 20)
        self.hashes: list[defer.Deferred[object]] = []
        self.clock = task.Clock()
        root = Root.at(self.root)
        factory = FileServerFactory(
            FileStore(root, self._later),
            self.clock,
            Limits(chunk_size=64 * 1024, zero_copy=False),
            Uploads(root, 1 << 20, defer.maybeDeferred),
        )
        self.protocol, self.transport = connect(factory)

    def _later(self, f, *args):  # type: ignore[no-untyped-def]
        d: defer.Deferred[object] = defer.Deferred()
        d.addCallback(lambda _: f(*args))
        self.hashes.append(d)
        return d

    def where(self) -> tuple[str, int]:
        """The state's phase, and how many timers are armed."""
        return self.protocol.state.name, len(self.clock.getDelayedCalls())

    def test_a_session(self) -> None:
        """Waiting (the idle timer), a partial line (the line timer instead), a big GET (the
        stall timer), a STAT waiting for its hash (no timer), an upload's body (the stall
        timer), then waiting again: never more than one timer."""
        protocol = self.protocol
        self.assertIs(protocol.state, protocol.idle)
        self.assertEqual(self.where(), ("WAITING", 1))
        protocol.dataReceived(b"GET big")
        self.assertIs(protocol.state, protocol.reading_line)
        self.assertEqual(self.where(), ("WAITING", 1))
        protocol.dataReceived(b".bin\n")
        self.assertEqual(self.where(), ("RESPONDING", 1))
        pump(self.transport)
        self.assertIs(protocol.state, protocol.idle)
        self.assertEqual(self.where(), ("WAITING", 1))
        protocol.dataReceived(b"STAT big.bin\n")
        self.assertEqual(self.where(), ("RESPONDING", 0))
        self.hashes.pop().callback(None)
        self.assertEqual(self.where(), ("WAITING", 1))
        body = b"x" * 10
        digest = hashlib.sha256(body).hexdigest()
        protocol.dataReceived(f"PUT 10 {digest} new.txt\n".encode() + body[:4])
        self.assertEqual(self.where(), ("RECEIVING", 1))
        protocol.dataReceived(body[4:])
        self.assertEqual(self.where(), ("WAITING", 1))
        self.assertTrue(self.transport.value().endswith(wire.stored_line(10, digest)))

    def test_connection_lost_stops_every_timer(self) -> None:
        """Lost while waiting, while sending, while receiving: no timer is left behind."""
        for request in (b"", b"GET big.bin\n", b"PUT 10 " + b"0" * 64 + b" new.txt\nxy"):
            protocol, _transport = connect(self.protocol.factory, port=len(request))
            protocol.dataReceived(request)
            protocol.connectionLost(None)  # type: ignore[arg-type]
            self.assertEqual(protocol.state.name, "CLOSING")
        self.protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(self.clock.getDelayedCalls(), [])
