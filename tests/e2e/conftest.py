"""Fixtures for end-to-end tests: a served root and a real twistd serving it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import serving


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty directory to serve."""
    served = tmp_path / "files"
    served.mkdir()
    return served


@pytest.fixture
def start_server(root: Path):
    """Start ``twistd -n tcpfiles`` on ``root``; stopped (SIGTERM) and checked at teardown."""
    with serving(root) as start:
        yield start
