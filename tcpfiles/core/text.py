"""Showing untrusted text safely: one rule for file names, error texts, logs and chat lines."""

from __future__ import annotations

import unicodedata

__all__ = [
    "escape_char",
    "escape_name",
    "escape_text",
    "escape_unsafe",
    "unsafe_to_display",
]

#: Unicode categories never shown raw (the one definition of "unsafe to display", shared by LIST,
#: error texts, logs and the chat): controls (Cc: C0, DEL, C1), format characters (Cf: bidi
#: embeddings, overrides and isolates U+202A-202E, U+2066-2069, marks U+200E/U+200F/U+061C,
#: zero-width U+200B-200D, U+2060, U+FEFF), surrogates (Cs), private use (Co), unassigned code
#: points (Cn: their meaning, and how a terminal draws them, is unknown) and the line/paragraph
#: separators (Zl U+2028, Zp U+2029).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def unsafe_to_display(ch: str) -> bool:
    """Whether the character ``ch`` must never reach a terminal or a log line raw."""
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def escape_char(ch: str) -> str:
    r"""The visible escape of one character: ``\uNNNN``, or ``\UNNNNNNNN`` past U+FFFF."""
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def escape_unsafe(text: str, keep: str = "") -> str:
    r"""Escape what :func:`unsafe_to_display` finds in ``text``, except characters in ``keep``.

    Unlike :func:`escape_text`, a backslash stays itself: this is for text shown to people
    (chat lines), where only safety matters, not a reversible encoding.
    """
    if text.isascii() and text.isprintable():  # the common case: nothing to look at
        return text
    return "".join(
        escape_char(ch) if ch not in keep and unsafe_to_display(ch) else ch for ch in text
    )


def escape_name(raw: bytes) -> str:
    r"""Make a file name safe to put on one line of a terminal.

    Bytes that are not UTF-8 become ``\xNN``; characters :func:`unsafe_to_display` finds
    (controls, bidi and zero-width format characters, separators, private use, unassigned)
    become ``\uNNNN`` (or ``\UNNNNNNNN``); a backslash becomes ``\\``.  Everything else is
    kept, so an ordinary name is its own escape.  :func:`unescape_name` reverses it.
    """
    if raw.isascii() and b"\\" not in raw:  # the common case (every logged request too)
        text = raw.decode("ascii")
        if text.isprintable():
            return text
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif unsafe_to_display(ch):
            out.append(escape_char(ch))
        else:
            out.append(ch)
    return "".join(out)


def escape_text(text: str) -> str:
    """Escape a str (a verb, a path) the way :func:`escape_name` escapes names."""
    return escape_name(text.encode("utf-8", "surrogateescape"))
