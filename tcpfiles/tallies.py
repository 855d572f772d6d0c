"""Counters and histograms for the reactor's thread: plain numbers, exposed when scraped.

prometheus_client's own take a lock on every ``inc`` and ``observe``, for threads that
tcpfiles does not have: recording a request's metrics cost 4.7-5.3 us that way and 1.5-1.9 us
here (timeit of ``RequestMetrics``; docs/performance.md has the whole request's figure).  These
are what :class:`~tcpfiles.prometheus.PrometheusMetrics` hands out in a single process, with
the same ``labels(...).inc(n)`` and ``labels(...).observe(x)``, turned into Prometheus metric
families by ``family()`` when scraped.  Call them from one thread only (the reactor's).  Under
several processes the recorder hands out prometheus_client's own instead (their values must
reach the shared files).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

__all__ = ["DEFAULT_BUCKETS", "Tally", "TallyHistogram"]

#: prometheus_client's default buckets, in seconds.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount


class _Spread:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value
        self.sum += value


class _Labelled:
    """A metric's children by label values (one child, ``()``, for a metric without labels)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labels)
        self.children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        """The child for these label values (made on first use)."""
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, not {values}")
            child = self.children[values] = self._child()
        return child

    def _child(self) -> Any:
        raise NotImplementedError


class Tally(_Labelled):
    """A counter: ``labels(...).inc(n)`` (``inc(n)`` itself without labels)."""

    def _child(self) -> _Count:
        return _Count()

    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            family.add_metric(list(values), child.value)
        return family


class TallyHistogram(_Labelled):
    """A histogram: ``labels(...).observe(x)``; ``buckets`` are upper bounds (+Inf added)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, documentation, labels)
        bounds = sorted(float(b) for b in buckets or DEFAULT_BUCKETS)
        self.bounds = tuple(bounds if bounds[-1] == math.inf else [*bounds, math.inf])

    def _child(self) -> _Spread:
        return _Spread(self.bounds)

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            running, buckets = 0, []
            for bound, count in zip(self.bounds, child.counts, strict=True):
                running += count
                buckets.append((floatToGoString(bound), running))
            family.add_metric(list(values), buckets, child.sum)
        return family
