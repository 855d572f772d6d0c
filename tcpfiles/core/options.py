"""Coercers for ``usage.Options`` parameters shared by every behaviour."""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["byte_limit", "byte_rate", "positive_float", "positive_int", "size"]


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def coerce(text: str) -> float:
        value: float = kind(text)
        if value <= 0:
            raise ValueError(f"must be positive, got {text}")
        return value

    coerce.coerceDoc = (  # type: ignore[attr-defined]
        f"A positive {'number' if kind is float else 'whole number'}."
    )
    return coerce


positive_int = _positive(int)
positive_float = _positive(float)


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size(text: str) -> int:
    """A byte count: ``1048576``, ``512K``, ``100M``, ``1G`` (powers of 1024)."""
    number, unit = text.strip(), ""
    if number[-1:].upper() in _UNITS and not number[-1:].isdigit():
        number, unit = number[:-1], number[-1:].upper()
    if not number.isdigit():
        raise ValueError(f"not a size: {text!r} (use e.g. 1048576, 512K, 100M, 1G)")
    return int(number) * _UNITS[unit]


size.coerceDoc = "Bytes, or with a K, M, G or T suffix."  # type: ignore[attr-defined]


_AMOUNT = re.compile(r"(\d+)\s*(?:([KMGT])(i?B)?)?", re.IGNORECASE)
_NO_LIMIT = ("0", "none", "off", "unlimited")


def byte_limit(text: str) -> int:
    """A byte count where 0 (or ``none``) means no limit: ``0``, ``1048576``, ``512K``, ``1G``,
    ``2MiB`` (K, M, G, T and KiB, MiB, GiB, TiB are all powers of 1024)."""
    word = text.strip()
    if word.lower() in _NO_LIMIT:
        return 0
    found = _AMOUNT.fullmatch(word)
    if found is None:
        raise ValueError(f"not an amount of bytes: {text!r} (use e.g. 512K, 2M, 2MiB, 1G or 0)")
    number, unit = found.group(1), (found.group(2) or "").upper()
    return int(number) * _UNITS[unit]


byte_limit.coerceDoc = (  # type: ignore[attr-defined]
    "Bytes, with K, M, G, T (or KiB, MiB, GiB, TiB: powers of 1024); 0 or none: no limit."
)


def byte_rate(text: str) -> int:
    """Bytes per second, as :func:`byte_limit` reads them (``2M``, ``512K/s``, ``2MiB``; 0 or
    ``none``: unlimited)."""
    word = text.strip()
    if word.lower().endswith("/s"):
        word = word[:-2]
    return byte_limit(word)


byte_rate.coerceDoc = (  # type: ignore[attr-defined]
    "Bytes per second, with K, M, G (or KiB, MiB, GiB: powers of 1024), e.g. 512K or 2MiB; "
    "0 or none: unlimited."
)
