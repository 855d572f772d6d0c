"""Under pytest, no test may leave a DelayedCall on the global reactor (under trial, its
TestCase checks that itself; SynchronousTestCase does not)."""

import pytest


@pytest.fixture(autouse=True)
def reactor_stays_clean():
    """Fail a test that leaves DelayedCalls behind on the global reactor."""
    from twisted.internet import reactor

    before = set(reactor.getDelayedCalls())
    yield
    leaked = [c for c in reactor.getDelayedCalls() if c not in before and c.active()]
    for call in leaked:
        call.cancel()
    assert not leaked, f"leaked DelayedCalls: {leaked}"
