"""What a behaviour reports for the operator's metrics, whatever collects them (or nothing).

A behaviour finds a :class:`Metrics` in its :class:`~tcpfiles.core.plugin.Context`
(``context.metrics``).  Without ``--metrics`` it is :data:`NO_METRICS`, which records nothing:
its counters and histograms are one shared do-nothing object, and a behaviour that checks
:attr:`Metrics.enabled` once, when it is built, pays nothing per request.  With ``--metrics``
it is a Prometheus recorder (:mod:`tcpfiles.prometheus`); this module names no library.

Two ways to report:

- **events**, as they happen: :meth:`Metrics.counter` and :meth:`Metrics.histogram` give a
  metric whose ``labels(*values)`` is the child to ``inc(amount)`` or ``observe(value)``
  (keep the children you use: looking one up costs a lock);
- **state**, read when the metrics are scraped: :meth:`Metrics.collect` names a function that
  returns a number (or ``{label values: number}``) from live objects (users in a room, files
  being hashed, a plain ``int`` a behaviour counts), so the hot path does nothing at all.

Connections need no code in a behaviour: the kernel's guard counts them in each behaviour's
:class:`~tcpfiles.core.connections.ConnectionTracker` (open, accepted, refused by reason), and
the composition reports every tracker under the behaviour's name (:meth:`Metrics.track`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["NO_METRICS", "Child", "Metrics", "Reading", "tracker_readings"]

#: What a :meth:`Metrics.collect` function returns: one number, or one per tuple of label values.
Reading = float | Mapping[tuple[str, ...], float]


class Child:
    """A metric, or one of its labelled children: what :data:`NO_METRICS` hands out for all.

    A real recorder returns its library's objects, which have the same methods.
    """

    __slots__ = ()

    def labels(self, *values: str) -> Child:
        """The child for these label values (in the order the metric's labels were named)."""
        return self

    def inc(self, amount: float = 1) -> None:
        """Add to a counter."""

    def observe(self, value: float) -> None:
        """Count a value in a histogram."""


_NOTHING = Child()


class Metrics:
    """Where behaviours report; this class itself records nothing (:data:`NO_METRICS`).

    Metric names follow Prometheus: ``tcpfiles_<behaviour>_<what>_<unit>``, counters ending in
    ``_total``; a name is registered once (ValueError for a second one, in a real recorder).
    """

    #: Whether anything is recorded: check it once and skip the work when it is False.
    enabled = False

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Any:
        """A counter (``labels(...).inc(n)``; without labels, ``inc(n)`` on it)."""
        return _NOTHING

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = (),
    ) -> Any:
        """A histogram (``labels(...).observe(x)``); ``buckets``: upper bounds, () for the
        recorder's default."""
        return _NOTHING

    def collect(
        self,
        name: str,
        documentation: str,
        read: Callable[[], Reading],
        kind: str = "gauge",
        labels: Sequence[str] = (),
    ) -> None:
        """Report ``read()`` whenever the metrics are scraped: a ``gauge`` (a level), or a
        ``counter`` (a total that only grows, e.g. an ``int`` the behaviour increments)."""

    def track(self, behaviour: str, tracker: Any) -> None:
        """Report the connections of ``behaviour``'s :class:`ConnectionTracker` (the
        composition calls it for each behaviour it serves)."""


#: The recorder of a server without ``--metrics``.
NO_METRICS = Metrics()


def tracker_readings(trackers: Mapping[str, Any]) -> dict[str, dict[tuple[str, ...], float]]:
    """What the connection metrics read from each behaviour's tracker, by metric:
    ``open`` and ``accepted`` by behaviour, ``refused`` by behaviour and reason."""
    readings: dict[str, dict[tuple[str, ...], float]] = {"open": {}, "accepted": {}, "refused": {}}
    for behaviour, tracker in trackers.items():  # a datagram behaviour's may count less
        readings["open"][(behaviour,)] = len(getattr(tracker, "active", ()))
        readings["accepted"][(behaviour,)] = getattr(tracker, "accepted", 0)
        for reason, count in getattr(tracker, "refused", {}).items():
            readings["refused"][(behaviour, reason)] = count
    return readings
