"""The progress bar of ``get`` and ``put``."""

from __future__ import annotations

import sys
from typing import Any


class ProgressBar:
    """A tqdm bar on stderr when it is a terminal (bytes, rate, ETA); silent otherwise."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name = name
        self.enabled = enabled and sys.stderr.isatty()
        self.bar: Any = None

    def start(self, total: int, already: int = 0) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=already,
                desc=self.name,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                leave=True,
            )

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
