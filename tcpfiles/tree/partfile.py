"""Writing a download beside its destination, as a .part file renamed into place when complete."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["part_file"]


@contextlib.contextmanager
def part_file(destination: str) -> Iterator[BinaryIO]:
    """Write to ``destination + ".part"``; on success rename it into place, else remove it."""
    part = destination + ".part"
    out = open(part, "wb")  # noqa: SIM115 - closed on both paths below
    try:
        yield out
        out.close()
        os.replace(part, destination)
    except BaseException:
        out.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        raise
