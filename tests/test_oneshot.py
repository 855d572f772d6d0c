"""The tutorial's one-shot protocol on fake transports."""

from __future__ import annotations

import os

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files.wire import escape_name
from tcpfiles.oneshot.plugin import OneShotOptions
from tcpfiles.oneshot.protocol import OneShotFactory
from tcpfiles.testing import pump
from tcpfiles.tree.paths import Root
from tcpfiles.tree.store import FileStore
from tests.helpers import cases, temporary_directory, with_cases


def start(root, clock, *args):
    options = OneShotOptions()
    options.parseOptions(list(args))
    store = None if root is None else FileStore(Root.at(str(root)))
    factory = OneShotFactory(store, clock, options)
    protocol = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


@with_cases
class ServeTests(SynchronousTestCase):
    """A served root with a file, a big file, an escaping link and a FIFO."""

    def setUp(self) -> None:
        self.root = served = temporary_directory(self) / "files"
        served.mkdir()
        (served / "notes.txt").write_bytes(b"hello\n")
        (served / "big.bin").write_bytes(os.urandom(3 << 20))
        os.symlink("/etc/passwd", served / "escape")
        os.mkfifo(served / "fifo")

    def test_name_then_newline_gets_the_file(self) -> None:
        """A name ended by a newline is answered at once with the file, then closed."""
        protocol, transport = start(self.root, task.Clock())
        for byte in b"big.bin\r\n":
            protocol.dataReceived(bytes([byte]))
        pump(transport)
        assert transport.value() == (self.root / "big.bin").read_bytes()
        assert transport.disconnecting

    def test_bare_name_is_complete_after_a_quiet_period(self) -> None:
        """A tutorial client sends the bare name and waits: the server answers after 0.5 s."""
        clock = task.Clock()
        protocol, transport = start(self.root, clock)
        protocol.dataReceived(b"notes")
        clock.advance(0.4)
        protocol.dataReceived(b".txt")
        clock.advance(0.4)
        assert transport.value() == b""
        clock.advance(0.1)
        pump(transport)
        assert transport.value() == b"hello\n"

    def test_half_close_ends_the_name(self) -> None:
        """A client that half-closes after the name is answered without waiting."""
        protocol, transport = start(self.root, task.Clock())
        protocol.dataReceived(b"notes.txt")
        protocol.readConnectionLost()
        pump(transport)
        assert transport.value() == b"hello\n"

    @cases(
        missing=(b"missing",),
        dotdot_etc_passwd=(b"../etc/passwd",),
        escape=(b"escape",),
        fifo=(b"fifo",),
        empty=(b"",),
        undecodable=(b"\xff\xfe",),
        oversized=(b"x" * 5000,),
    )
    def test_anything_not_servable_is_a_lone_1(self, name) -> None:
        """Missing, outside, special, undecodable or oversized names all get the byte 1."""
        clock = task.Clock()
        protocol, transport = start(self.root, clock)
        protocol.dataReceived(name)
        protocol.readConnectionLost()
        clock.advance(1)
        assert transport.value() == b"1"
        assert transport.disconnecting

    def test_silent_client_times_out(self) -> None:
        """A client that never sends a name gets '1' after the name timeout."""
        clock = task.Clock()
        protocol, transport = start(self.root, clock)
        clock.advance(30)
        assert transport.value() == b"1"


def served_directory(case: SynchronousTestCase) -> str:
    """A fresh directory holding notes.txt ("hello\\n")."""
    path = temporary_directory(case)
    (path / "notes.txt").write_bytes(b"hello\n")
    return str(path)


class NameDeadlineTests(SynchronousTestCase):
    """The name must arrive within a fixed deadline; the quiet period only ends a name."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.protocol, self.transport = start(served_directory(self), self.clock)

    def trickle(self, data: bytes, every: float) -> None:
        for byte in data:
            self.protocol.dataReceived(bytes([byte]))
            self.clock.advance(every)

    def test_trickle_is_cut_off_at_the_deadline(self) -> None:
        """One byte every 0.4 s (under the 0.5 s quiet period) is answered 1 at 30 s, not later."""
        with capturedLogs() as events:
            for _ in range(200):  # bounded: 80 s of trickle at most
                self.protocol.dataReceived(b"x")
                before = self.clock.seconds()
                self.clock.advance(0.4)
                if self.transport.value():
                    break
        self.assertEqual(self.transport.value(), b"1")
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(before < 30 <= self.clock.seconds(), before)
        self.assertEqual(len(events), 1)
        self.assertIn(" oneshot " + "x" * 74, formatEvent(events[0]))
        self.assertIn("refused: name not complete within 30 s", formatEvent(events[0]))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deadline_runs_from_the_connection(self) -> None:
        """A name begun late must still end by name-timeout after connecting."""
        self.clock.advance(29.8)
        self.protocol.dataReceived(b"notes.txt")  # its quiet period would end at 30.3 s
        self.clock.advance(0.2)
        self.assertEqual(self.transport.value(), b"1")

    def test_name_timeout_option_sets_the_deadline(self) -> None:
        """--oneshot-name-timeout 3: a 0.4 s trickle of a real name is refused at 3 s."""
        protocol, transport = start(served_directory(self), self.clock, "--name-timeout", "3")
        for byte in b"notes.txt":
            protocol.dataReceived(bytes([byte]))
            self.clock.advance(0.4)
            if transport.value():
                break
        self.assertEqual(transport.value(), b"1")
        self.assertAlmostEqual(self.clock.seconds(), 3.2)

    def test_byte_by_byte_name_still_works(self) -> None:
        """A name sent a byte at a time within the deadline is served after the quiet period."""
        self.trickle(b"notes.txt", 0.4)
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.1)
        pump(self.transport)
        self.assertEqual(self.transport.value(), b"hello\n")

    def test_byte_by_byte_with_newline_is_served_at_once(self) -> None:
        """The newline ends a byte-by-byte name without waiting for the quiet period."""
        for byte in b"notes.txt\r\n":
            self.protocol.dataReceived(bytes([byte]))
        pump(self.transport)
        self.assertEqual(self.transport.value(), b"hello\n")

    def test_whole_name_still_works(self) -> None:
        """A whole bare name in one send is served after the quiet period; no timer is left."""
        self.protocol.dataReceived(b"notes.txt")
        self.clock.advance(0.5)
        pump(self.transport)
        self.assertEqual(self.transport.value(), b"hello\n")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LogEscapingTests(SynchronousTestCase):
    """The requested name is logged escaped exactly as the files protocol escapes its log."""

    def logged(self, sent: bytes, name: bytes | None = None) -> str:
        protocol, transport = start(served_directory(self), task.Clock())
        with capturedLogs() as events:
            protocol.dataReceived(sent)
            protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"1")
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["name"], escape_name(sent if name is None else name))
        return formatEvent(events[0])

    def test_controls_bidi_and_braces_are_logged_escaped_and_literal(self) -> None:
        """CR, ESC, U+202E and {x} come out as \\u000d, \\u001b, \\u202e and a literal {x}."""
        text = self.logged("a\rb\x1bc\u202ed{x}".encode())
        self.assertIn(" oneshot a\\u000db\\u001bc\\u202ed{x} -> refused: ", text)
        for raw in ("\r", "\x1b", "\u202e", "\n"):
            self.assertNotIn(raw, text)

    def test_undecodable_bytes_and_backslashes(self) -> None:
        """Bytes that are not UTF-8 log as \\xNN, a backslash doubled, as in the files log."""
        text = self.logged(b"x\xff\\y")
        self.assertIn(" oneshot x\\xff\\\\y -> refused: ", text)

    def test_trailing_cr_is_not_part_of_the_name(self) -> None:
        """A CRLF-ended name is logged without its CR, like the name that is looked up."""
        text = self.logged(b"missing\r\n", b"missing")
        self.assertIn(" oneshot missing -> refused: no such file or directory 0 bytes", text)


class NoRootTests(SynchronousTestCase):
    """With no root (--auth without --anonymous) oneshot still runs and refuses every name."""

    def test_every_name_is_a_lone_1(self) -> None:
        """Whole or byte by byte, any name gets 1 and the log says why."""
        for feed in ([b"notes.txt\n"], [bytes([b]) for b in b"notes.txt\n"]):
            protocol, transport = start(None, task.Clock())
            with capturedLogs() as events:
                for chunk in feed:
                    protocol.dataReceived(chunk)
            self.assertEqual(transport.value(), b"1")
            self.assertTrue(transport.disconnecting)
            self.assertIn("refused: no files to serve", formatEvent(events[0]))
