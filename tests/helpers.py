"""Helpers for driving any tcpfiles protocol in memory: the public testing kit's
(:mod:`tcpfiles.testing`), named here for the tests that still import them from this module."""

from __future__ import annotations

from tcpfiles.testing import PausingTransport, connect, guarded, pump

__all__ = ["PausingTransport", "connect", "guarded", "pump"]
