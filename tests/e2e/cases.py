"""Trial-style classes for the end-to-end tests, run the same by ``python -m twisted.trial`` and
pytest: what ``tests/e2e/conftest.py`` gives pytest functions as fixtures (``tmp_path``,
``root``, ``start_server``) is here set up per test, and one method per parametrized case."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import Twistd, serving

T = TypeVar("T", bound=type)


def temporary_directory(case: SynchronousTestCase) -> Path:
    """A fresh directory, removed with everything in it when ``case`` is done (not trial's
    ``mktemp``: under pytest that writes into the source tree)."""
    path = Path(tempfile.mkdtemp(prefix="tcpfiles-test-"))
    case.addCleanup(shutil.rmtree, path, True)
    return path


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


def cases(**named: tuple[Any, ...]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Mark ``test_x(self, *args)`` to become one test per case, ``test_x_<name>(self)``, in a
    class decorated with :func:`with_cases`."""

    def mark(method: Callable[..., None]) -> Callable[..., None]:
        method.cases = named  # type: ignore[attr-defined]
        return method

    return mark


def with_cases(cls: T) -> T:
    """Replace each method marked by :func:`cases` with one test method per case."""
    for name, method in list(vars(cls).items()):
        named = getattr(method, "cases", None)
        if named is None:
            continue
        delattr(cls, name)
        for case, args in named.items():
            test = _bind(method, args)
            test.__name__ = f"{name}_{case}"
            test.__qualname__ = f"{cls.__qualname__}.{test.__name__}"
            test.__doc__ = method.__doc__
            assert not hasattr(cls, test.__name__), test.__name__
            setattr(cls, test.__name__, test)
    return cls


def _bind(method: Callable[..., None], args: tuple[Any, ...]) -> Callable[[Any], None]:
    def test(self: Any) -> None:
        method(self, *args)

    return test
