"""External programs the tests start themselves (redis-server, haproxy, nginx), from Debian."""

from __future__ import annotations

import os
import shutil
from unittest import SkipTest

__all__ = ["require_binary"]


def require_binary(name: str) -> str:
    """The path of program ``name``; the test is skipped when it is missing, or fails when
    ``TCPFILES_REQUIRE_EXTERNAL=1`` (CI) says it must be there."""
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin")
    if found:
        return found
    if os.environ.get("TCPFILES_REQUIRE_EXTERNAL") == "1":
        raise AssertionError(f"{name} is not installed, and TCPFILES_REQUIRE_EXTERNAL=1")
    raise SkipTest(f"{name} is not installed")
