"""Did the test leave the reactor (or the clock) as it found it?

A ``DelayedCall`` still pending, a connection or a listening port still registered: each one
outlives its test and fails a later one, far from the cause.  Trial's ``TestCase`` checks the
global reactor after each test; :func:`assert_clean` does it for any reactor or ``Clock``, in a
``SynchronousTestCase`` or under pytest::

    clock = task.Clock()
    self.addCleanup(assert_clean, clock)    # registered first: runs after every other cleanup

    since = ReactorState.of(reactor)        # what was there before (the waker, other tests')
    ...
    assert_clean(reactor, since=since)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _active_calls(reactor: Any) -> frozenset[Any]:
    return frozenset(call for call in reactor.getDelayedCalls() if call.active())


def _descriptors(reactor: Any, kind: str) -> frozenset[Any]:
    """The reactor's readers or writers, without its own (the waker, the signal pipe)."""
    get = getattr(reactor, f"get{kind}", None)
    if get is None:  # a task.Clock: time only
        return frozenset()
    internal = set(getattr(reactor, "_internalReaders", ()))
    internal.add(getattr(reactor, "waker", None))
    return frozenset(d for d in get() if d not in internal)


@dataclass(frozen=True)
class ReactorState:
    """What a reactor (or clock) holds at one moment: pending calls, readers, writers."""

    delayed_calls: frozenset[Any] = field(default_factory=frozenset)
    readers: frozenset[Any] = field(default_factory=frozenset)
    writers: frozenset[Any] = field(default_factory=frozenset)

    @classmethod
    def of(cls, reactor: Any) -> ReactorState:
        """The state of ``reactor`` now (a real reactor, a ``MemoryReactorClock``, a
        ``task.Clock``); its own descriptors (waker, signal pipe) are never counted."""
        return cls(
            _active_calls(reactor),
            _descriptors(reactor, "Readers"),
            _descriptors(reactor, "Writers"),
        )

    def added(self, since: ReactorState) -> ReactorState:
        """What this state holds that ``since`` did not."""
        return ReactorState(
            self.delayed_calls - since.delayed_calls,
            self.readers - since.readers,
            self.writers - since.writers,
        )

    def __bool__(self) -> bool:
        return bool(self.delayed_calls or self.readers or self.writers)

    def describe(self) -> str:
        """One line per kind of leftover, for a failure message."""
        parts = [
            f"{title}: {sorted(map(repr, items))}"
            for title, items in (
                ("leaked DelayedCalls", self.delayed_calls),
                ("leaked readers", self.readers),
                ("leaked writers", self.writers),
            )
            if items
        ]
        return "\n".join(parts)


def assert_clean(
    reactor: Any,
    since: ReactorState | None = None,
    *,
    descriptors: bool = True,
    cancel: bool = True,
) -> None:
    """AssertionError naming each ``DelayedCall``, reader and writer that ``reactor`` holds
    now and did not hold in ``since`` (by default: none at all).

    ``descriptors=False`` checks the calls only.  With ``cancel`` (the default) the leaked
    calls are cancelled, so that they cannot fail a later test too; leaked descriptors are
    only reported (closing them is the test's job).
    """
    now = ReactorState.of(reactor)
    leaked = now.added(since or ReactorState())
    if not descriptors:
        leaked = ReactorState(leaked.delayed_calls)
    if not leaked:
        return
    described = leaked.describe()  # before cancelling: a cancelled call's repr omits its function
    if cancel:
        for call in leaked.delayed_calls:
            call.cancel()
    raise AssertionError(described)
