"""Shared fixtures.  No module-level reactor import here: pytest-twisted installs it first."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def reactor_stays_clean() -> Iterator[None]:
    """Fail a test that leaves DelayedCalls (cancelled, so that they fail no later test),
    connections or ports behind on the global reactor."""
    from twisted.internet import reactor

    from tcpfiles.testing import ReactorState, assert_clean

    before = ReactorState.of(reactor)
    yield
    assert_clean(reactor, since=before)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[Any]:
    """Run an asynchronous trial ``TestCase`` with the reactor to itself, as trial would.

    pytest-twisted runs the reactor for the whole session in a greenlet; trial's ``TestCase``
    runs it for each test (``reactor.run()``, then ``crash()``), which it cannot do while the
    greenlet holds it running: every such test after the first pytest-twisted one fails with
    ``DirtyReactorAggregateError`` (pytest-dev/pytest-twisted#147, #93; docs/testing.md).  So
    the greenlet lets go first (the reactor is crashed: stopped without shutting down, which is
    what trial does between its tests), trial runs the test, and pytest-twisted gets a fresh
    greenlet afterwards.  Synchronous tests are left alone.
    """
    from twisted.trial.unittest import TestCase

    case = getattr(item, "cls", None)
    if not (isinstance(case, type) and issubclass(case, TestCase)):
        return (yield)
    try:
        import pytest_twisted
    except ImportError:  # no greenlet to hand the reactor over from
        return (yield)
    from twisted.internet import reactor

    greenlet = pytest_twisted._instances.gr_twisted
    handed_over = bool(greenlet) and reactor.running  # started: it holds the reactor until told
    if handed_over:
        reactor.callLater(0, reactor.crash)
        greenlet.switch()  # returns once reactor.run() has returned in it: the greenlet is over
    try:
        return (yield)
    finally:
        if handed_over:
            pytest_twisted.init_twisted_greenlet()  # a new one, started at the next blockon
