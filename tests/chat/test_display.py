"""Display spoofing: the chat relays no character the codec deems unsafe to display.

One classification for the whole code base (:func:`tcpfiles.core.text.unsafe_to_display`):
LIST names escape these characters, and so does every line the chat relays; nicks holding them
are refused.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.chat.room import BAD_NICK_CHARS, Room
from tcpfiles.core import text
from tcpfiles.files import wire
from tcpfiles.testing import connect
from tests.chat.test_flood import feed, lines, make_factory
from tests.chat.test_room import Person

BIDI = [0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x061C]
SEPARATORS = [0x2028, 0x2029]
ZERO_WIDTH = [0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF]
PRIVATE_USE = [0xE000, 0xF8FF, 0xF0000, 0xFFFFD, 0x100000, 0x10FFFD]
CONTROLS = [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F, *range(0x80, 0xA0)]  # TAB aside
OTHER_FORMAT = [0x00AD, 0x180E, 0x2061, 0x206F, 0xFFF9, 0x110BD, 0xE0001, 0xE007F]
UNASSIGNED = [0x0378, 0xFFFE, 0xFFFF, 0x10FFFF]
EVERY_CLASS = BIDI + SEPARATORS + ZERO_WIDTH + PRIVATE_USE + CONTROLS + OTHER_FORMAT + UNASSIGNED


def shown(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


class DisplayTests(SynchronousTestCase):
    """Every listed class escaped in what is relayed, refused in nicks."""

    def setUp(self) -> None:
        self.factory = make_factory(task.Clock(), "--rate=1000000", "--burst=1000000")
        self.ann, self.ann_t = connect(self.factory, port=1)
        self.bob, self.bob_t = connect(self.factory, port=2)
        self.ann.dataReceived(b"/nick ann\n")
        self.bob.dataReceived(b"/nick bob\n")
        lines(self.ann_t), lines(self.bob_t)

    def test_the_codec_classifies_every_listed_character_as_unsafe(self) -> None:
        """The shared classification covers each class, and LIST escapes each the same way."""
        for code in EVERY_CLASS:
            ch = chr(code)
            self.assertTrue(text.unsafe_to_display(ch), hex(code))
            self.assertEqual(wire.escape_name(ch.encode("utf-8")), shown(code))
            self.assertEqual(wire.unescape_name(shown(code)), ch.encode("utf-8"))
        for ordinary in "aé漢😀 \u00a0-\\":
            self.assertFalse(text.unsafe_to_display(ordinary), ordinary)

    def test_messages_me_and_msg_escape_every_class(self) -> None:
        """Said lines, /me and /msg show each unsafe character as an escape, whole or by bytes."""
        for byte_by_byte in (False, True):
            for code in EVERY_CLASS:
                raw = chr(code).encode("utf-8")
                feed(self.ann, b"x" + raw + b"y\n/me " + raw + b"\n", byte_by_byte)
                feed(self.ann, b"/msg bob " + raw + b"\n", byte_by_byte)
                if code == 0x0A:  # LF ends the line: the halves arrive as two lines
                    expected = ["<ann> x", "<ann> y", "* ann /me", "<ann> "]
                    self.assertEqual(lines(self.bob_t)[:2], expected[:2])
                    lines(self.ann_t)
                    continue
                if code == 0x0D:  # CR before LF is a line ending (CRLF), elsewhere escaped
                    self.assertEqual(lines(self.bob_t)[0], "<ann> x\\u000dy")
                    lines(self.ann_t)
                    continue
                self.assertEqual(
                    lines(self.bob_t),
                    [
                        f"<ann> x{shown(code)}y",
                        f"* ann {shown(code)}",
                        f"[ann -> bob] {shown(code)}",
                    ],
                    hex(code),
                )
                lines(self.ann_t)

    def test_nothing_unsafe_ever_reaches_a_member(self) -> None:
        """A line packed with every class arrives with no unsafe character but TAB."""
        packed = "".join(chr(c) for c in EVERY_CLASS if c not in (0x0A, 0x0D))
        for byte_by_byte in (False, True):
            feed(self.ann, f"a{packed}\tb\n/msg bob {packed}\n".encode(), byte_by_byte)
            feed(self.ann, f"/nosuch{packed}\n/msg {packed}x hi\n".encode(), byte_by_byte)
            for line in lines(self.bob_t) + lines(self.ann_t):
                unsafe = [c for c in line if c != "\t" and text.unsafe_to_display(c)]
                self.assertEqual(unsafe, [], line)

    def test_notices_escape_what_the_user_typed(self) -> None:
        """Unknown commands and unknown /msg targets are echoed escaped."""
        feed(self.ann, "/frob\u202e\n/msg b\u200bob hi\n".encode(), False)
        self.assertEqual(
            lines(self.ann_t),
            [
                "!!! unknown command /frob\\u202e; try /help",
                "!!! no one called b\\u200bob is here",
            ],
        )

    def test_nicks_with_any_unsafe_character_are_refused(self) -> None:
        """A nick holding any listed character is refused, never cleaned into a valid one."""
        for byte_by_byte in (False, True):
            for code in EVERY_CLASS:
                if code in (0x0A, 0x0D):
                    continue
                raw = chr(code).encode("utf-8")
                for nick in (b"carol" + raw, raw + b"carol", b"ca" + raw + b"rol"):
                    eve, eve_t = connect(self.factory, port=3)
                    lines(eve_t)
                    feed(eve, b"/nick " + nick + b"\n", byte_by_byte)
                    self.assertEqual(lines(eve_t), [BAD_NICK_CHARS], hex(code))
                    self.assertIsNone(eve.nick)
                    eve.connectionLost(None)
        self.assertEqual(sorted(self.factory.room.members), ["ann", "bob"])
        self.assertEqual(lines(self.bob_t), [])

    def test_lone_surrogates_are_escaped(self) -> None:
        """A str with a lone surrogate (Cs; not producible from the wire) is escaped too."""
        room = Room()
        ann, bob = Person(), Person()
        room.set_nick(ann, "ann")
        room.set_nick(bob, "bob")
        room.line(ann, "a\ud800b")
        self.assertEqual(bob.got[-1], "<ann> a\\ud800b")
        room.set_nick(ann, "x\udfff")
        self.assertEqual(ann.got[-1], BAD_NICK_CHARS)
