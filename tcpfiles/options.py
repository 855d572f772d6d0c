"""Coercers for ``usage.Options`` parameters shared by every behaviour."""

from __future__ import annotations

from collections.abc import Callable


def _positive(kind: type) -> Callable[[str], float]:
    def coerce(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise ValueError(f"must be positive, got {text}")
        return value

    coerce.coerceDoc = (  # type: ignore[attr-defined]
        f"A positive {'number' if kind is float else 'whole number'}."
    )
    return coerce


positive_int = _positive(int)
positive_float = _positive(float)
