"""Real external programs the tests start: skipped when missing, unless CI requires them."""

from __future__ import annotations

import os
import shutil

from twisted.trial.unittest import SkipTest


def require_binary(name: str) -> str:
    """The path of program ``name``; SkipTest when it is not installed, unless the environment
    sets ``TCPFILES_REQUIRE_EXTERNAL=1`` (CI), where a missing program is a failure."""
    path = shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/usr/bin") if os.access(p := f"{d}/{name}", os.X_OK)), None
    )
    if path is not None:
        return path
    if os.environ.get("TCPFILES_REQUIRE_EXTERNAL") == "1":
        raise AssertionError(f"{name} is not installed and TCPFILES_REQUIRE_EXTERNAL=1")
    raise SkipTest(f"{name} is not installed")
