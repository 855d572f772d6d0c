"""Trial-style classes for the end-to-end tests, run the same by ``python -m twisted.trial`` and
pytest: what ``tests/e2e/conftest.py`` gives pytest functions as fixtures (``tmp_path``,
``root``, ``start_server``) is here set up per test, and one method per parametrized case."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import Twistd, serving
from tests.helpers import cases, temporary_directory, with_cases

__all__ = ["E2ETestCase", "cases", "temporary_directory", "with_cases"]


class E2ETestCase(SynchronousTestCase):
    """``self.tmp_path`` for each test; ``self.root`` and ``self.start_server`` on first use."""

    def setUp(self) -> None:
        super().setUp()
        self.tmp_path = temporary_directory(self)

    @cached_property
    def root(self) -> Path:
        """An empty directory to serve: ``tmp_path/files``."""
        served = self.tmp_path / "files"
        served.mkdir()
        return served

    @cached_property
    def start_server(self) -> Callable[..., Twistd]:
        """Starts ``twistd -n tcpfiles`` on ``root``; each one started is stopped (SIGTERM) and
        its log checked clean when the test is done (before ``tmp_path`` goes)."""
        return self.enterContext(serving(self.root))
