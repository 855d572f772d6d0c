"""Fixtures for end-to-end tests: a served root and a real twistd serving it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import Twistd


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty directory to serve."""
    served = tmp_path / "files"
    served.mkdir()
    return served


@pytest.fixture
def start_server(root: Path):
    """Start ``twistd -n tcpfiles`` on ``root``; stopped (SIGTERM) and checked at teardown."""
    servers: list[Twistd] = []

    def start(*extra: str, env: dict[str, str] | None = None, **kwargs: str) -> Twistd:
        server = Twistd(root, *extra, env=env, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.stop()
        server.assert_clean_log()
