"""Real external programs (haproxy, redis-server, nginx) that some tests start themselves."""

from __future__ import annotations

import os
import shutil
import unittest

__all__ = ["require_binary"]


def require_binary(name: str) -> str:
    """The path of program ``name``; the test is skipped without it, unless
    ``TCPFILES_REQUIRE_EXTERNAL=1`` (CI), where a missing program fails it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is not None:
        return path
    reason = f"{name} is not installed"
    if os.environ.get("TCPFILES_REQUIRE_EXTERNAL") == "1":
        raise AssertionError(f"{reason} (TCPFILES_REQUIRE_EXTERNAL=1)")
    raise unittest.SkipTest(reason)
