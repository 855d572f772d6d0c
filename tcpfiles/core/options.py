"""Coercers for ``usage.Options`` parameters shared by every behaviour."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["positive_float", "positive_int", "size"]


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
