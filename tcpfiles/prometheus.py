"""Prometheus metrics for ``twistd tcpfiles --metrics ENDPOINT``: the recorder and its web page.

Needs ``prometheus_client`` (``pip install 'tcpfiles[metrics]'``); nothing else of tcpfiles
imports this module unless metrics are asked for.

- :class:`PrometheusMetrics` is the :class:`~tcpfiles.core.metrics.Metrics` behaviours report
  to: counters and histograms are ``prometheus_client``'s own; what behaviours
  :meth:`~PrometheusMetrics.collect` (and each behaviour's connections) is read from live
  objects when the page is scraped, by a custom collector.
- :class:`MetricsService` serves its ``/metrics`` (the text format, made by
  ``generate_latest``) and ``/status`` (JSON, :mod:`tcpfiles.status`): the page is
  :mod:`tcpfiles.metrics_page`'s, behind the kernel's guard.

Several processes (``PROMETHEUS_MULTIPROC_DIR`` set in each before ``prometheus_client`` is
imported): each worker's counters and histograms go to files in that directory, and what is
read from live objects is copied there every :data:`SAMPLE_EVERY` seconds (gauges with
``multiprocess_mode="livesum"``: a dead worker's drop out once :func:`worker_died` is called).
The process that serves the page sums the directory: :func:`serve_metrics_multiprocess`.  Each
worker also writes its ``/status`` there every second (``status_PID.json``), and the page's
``/status`` merges them (:func:`tcpfiles.status.workers_status`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from tcpfiles.core.metrics import Metrics, Reading, tracker_readings
from tcpfiles.core.service import ListenerService
from tcpfiles.metrics_page import PageService, metrics_site
from tcpfiles.status import status_file, status_of, workers_status
from tcpfiles.tallies import DEFAULT_BUCKETS, Tally, TallyHistogram

__all__ = [
    "ENVIRONMENT",
    "SAMPLE_EVERY",
    "MetricsService",
    "PrometheusMetrics",
    "WorkersMetrics",
    "serve_metrics_multiprocess",
    "worker_died",
]

#: The environment variable that puts prometheus_client in multi-process mode (its directory).
ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds between copies of the live readings to the multi-process directory.
SAMPLE_EVERY = 1.0

log = Logger(namespace="tcpfiles.metrics")

prometheus_client.disable_created_metrics()  # no *_created series: nothing here uses them

#: The connection metrics every behaviour gets from the kernel's guard: (name, help, kind,
#: labels, which of tracker_readings).
_CONNECTIONS = (
    ("tcpfiles_connections_open", "Connections open, by behaviour.", "gauge", ("behaviour",)),
    (
        "tcpfiles_connections_accepted_total",
        "Connections accepted, by behaviour.",
        "counter",
        ("behaviour",),
    ),
    (
        "tcpfiles_connections_refused_total",
        "Connections refused, by behaviour and reason (max-per-peer, max-connections, draining).",
        "counter",
        ("behaviour", "reason"),
    ),
)


@dataclass
class _Collected:
    """One metric read from live objects when scraped."""

    name: str
    documentation: str
    read: Callable[[], Reading]
    kind: str
    labels: tuple[str, ...]
    last: dict[tuple[str, ...], float] = field(default_factory=dict)  # counters, when sampled

    def readings(self) -> dict[tuple[str, ...], float]:
        value = self.read()
        return {(): float(value)} if isinstance(value, int | float) else dict(value)

    def family(self) -> Metric:
        make = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = make(self.name, self.documentation, labels=self.labels)
        for values, value in self.readings().items():
            family.add_metric(list(values), value)
        return family


class PrometheusMetrics(Metrics):
    """The recorder of a server with ``--metrics``: its metrics in :attr:`registry`.

    ``multiprocess``: this process is one of several writing to ``$PROMETHEUS_MULTIPROC_DIR``
    (whose page another process serves): what is read from live objects is then copied there
    by :meth:`sampling`, and :attr:`registry` is not meant to be served.
    """

    enabled = True

    def __init__(
        self, registry: CollectorRegistry | None = None, *, multiprocess: bool = False
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess = multiprocess
        self.trackers: dict[str, Any] = {}
        self._collected: list[_Collected] = []
        self._tallies: list[Tally | TallyHistogram] = []
        self._names: set[str] = set()
        self._mirrors: dict[str, Any] = {}
        for name, documentation, kind, labels in _CONNECTIONS:
            which = name.split("_")[2]  # open, accepted, refused
            self.collect(name, documentation, self._connections(which), kind, labels)
        if not multiprocess:
            self.registry.register(_LiveCollector(self))

    @classmethod
    def from_environ(cls) -> PrometheusMetrics:
        """In multi-process mode when ``$PROMETHEUS_MULTIPROC_DIR`` is set, else on its own."""
        return cls(multiprocess=bool(os.environ.get(ENVIRONMENT)))

    def _name(self, name: str) -> str:
        if name in self._names:
            raise ValueError(f"metric {name} is already registered")
        self._names.add(name)
        return name

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Any:
        """prometheus_client's Counter under several processes; else a lock-free
        :class:`~tcpfiles.tallies.Tally` (the reactor's thread only)."""
        if self.multiprocess:
            return Counter(self._name(name), documentation, labels, registry=self.registry)
        tally = Tally(self._name(name), documentation, labels)
        self._tallies.append(tally)
        return tally

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = (),
    ) -> Any:
        """As :meth:`counter`: prometheus_client's Histogram, or a
        :class:`~tcpfiles.tallies.TallyHistogram`."""
        if self.multiprocess:
            kwargs: dict[str, Any] = {"buckets": tuple(buckets)} if buckets else {}
            name = self._name(name)
            return Histogram(name, documentation, labels, registry=self.registry, **kwargs)
        tally = TallyHistogram(self._name(name), documentation, labels, buckets or DEFAULT_BUCKETS)
        self._tallies.append(tally)
        return tally

    def collect(
        self,
        name: str,
        documentation: str,
        read: Callable[[], Reading],
        kind: str = "gauge",
        labels: Sequence[str] = (),
    ) -> None:
        if kind not in ("gauge", "counter"):
            raise ValueError(f"kind must be gauge or counter, not {kind!r}")
        self._collected.append(
            _Collected(self._name(name), documentation, read, kind, tuple(labels))
        )

    def track(self, behaviour: str, tracker: Any) -> None:
        self.trackers[behaviour] = tracker

    def _connections(self, which: str) -> Callable[[], Reading]:
        return lambda: tracker_readings(self.trackers)[which]

    def families(self) -> Iterator[Metric]:
        """Every metric read from live objects or tallied, as it is now."""
        for collected in self._collected:
            yield collected.family()
        for tally in self._tallies:
            yield tally.family()

    def gauges(self) -> dict[str, float]:
        """The unlabelled gauges read from live objects now (``tcpfiles status`` shows them)."""
        return {
            c.name: c.readings().get((), 0.0)
            for c in self._collected
            if c.kind == "gauge" and not c.labels
        }

    def status(self, clock: Any) -> dict[str, Any]:
        """What ``/status`` answers: see :func:`tcpfiles.status.status_of`."""
        return status_of(self.trackers, self.gauges(), clock.seconds())

    # --- multi-process mode -----------------------------------------------------------------

    def sample(self) -> None:
        """Copy the live readings to this process's multi-process files (gauges set,
        counters advanced by what they grew since the last copy)."""
        for collected in self._collected:
            mirror = self._mirrors.get(collected.name)
            if mirror is None:
                mirror = self._mirrors[collected.name] = _mirror(collected)
            for values, value in collected.readings().items():
                child = mirror.labels(*values) if values else mirror
                if collected.kind == "gauge":
                    child.set(value)
                else:
                    grown = value - collected.last.get(values, 0.0)
                    collected.last[values] = value
                    if grown > 0:
                        child.inc(grown)

    def sampling(self, clock: Any, every: float = SAMPLE_EVERY) -> service.Service:
        """A service that calls :meth:`sample` every ``every`` seconds while it runs (and
        once more when it stops)."""
        return _Sampling(self, clock, every)


def _mirror(collected: _Collected) -> Any:
    """The multi-process metric a live reading is copied to (in no registry: the directory
    is what is served)."""
    name, documentation, labels = collected.name, collected.documentation, collected.labels
    if collected.kind == "counter":
        return Counter(name, documentation, labels, registry=None)
    return Gauge(name, documentation, labels, registry=None, multiprocess_mode="livesum")


class _LiveCollector:
    """prometheus_client's collector protocol over :meth:`PrometheusMetrics.families`."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.families()


class _Sampling(service.Service):
    """Every ``every`` seconds: the live readings copied to the multi-process files, and this
    process's ``/status`` written beside them (``status_PID.json``), for the parent's page."""

    def __init__(self, metrics: PrometheusMetrics, clock: Any, every: float) -> None:
        self.metrics = metrics
        self.clock = clock
        self.loop = task.LoopingCall(self.sample)
        self.loop.clock = clock
        self.every = every
        directory = os.environ.get(ENVIRONMENT)
        self.status_path = directory and os.path.join(directory, status_file(os.getpid()))

    def sample(self) -> None:
        self.metrics.sample()
        if not self.status_path:
            return
        temporary = self.status_path + ".new"
        try:
            with open(temporary, "w", encoding="utf-8") as out:
                json.dump(self.metrics.status(self.clock), out)
            os.replace(temporary, self.status_path)  # a reader never sees half of it
        except OSError as exc:  # the directory is gone (the parent exited): nothing to tell
            log.debug("status not written: {exc}", exc=exc)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.loop.start(self.every, now=True)

    def stopService(self) -> Any:
        if self.loop.running:
            self.loop.stop()
        self.metrics.sample()  # the last readings, so that counters are not short at exit
        if self.status_path:
            with contextlib.suppress(OSError):
                os.remove(self.status_path)  # stopped: no transfers, no connections of its own
        return super().stopService()  # type: ignore[no-untyped-call]


class MetricsService(PageService):
    """Serves ``metrics``' ``/metrics`` and ``/status`` on ``description`` while running
    (a :class:`~tcpfiles.metrics_page.PageService`: behind the guard, warning off loopback)."""

    def __init__(
        self,
        description: str,
        metrics: PrometheusMetrics,
        reactor: Any,
        trackers: list[Any] | None = None,
    ) -> None:
        site = metrics_site(metrics.registry, lambda: metrics.status(reactor), reactor)
        super().__init__(description, site, reactor, trackers)


def serve_metrics_multiprocess(reactor: Any, endpoint: str, directory: str) -> ListenerService:
    """For the parent of several workers: a service serving ``/metrics`` and ``/status`` on
    ``endpoint``, the sum of what every process wrote to ``directory`` (their
    ``$PROMETHEUS_MULTIPROC_DIR``).  Start it (or give it a parent service) to listen."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    site = metrics_site(registry, lambda: workers_status(directory), reactor)
    return PageService(endpoint, site, reactor)


def worker_died(pid: int, directory: str) -> None:
    """A worker is gone: its live gauges and its status no longer count (its counters do)."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    with contextlib.suppress(OSError):
        os.remove(os.path.join(directory, status_file(pid)))


class WorkersMetrics:
    """``--metrics`` for the parent of ``--workers``: a fresh directory for the workers to
    write to (:attr:`environment` is what they need in theirs), :attr:`page`, the listener
    serving its sum on ``endpoint``, and :meth:`worker_died` for the supervisor to call with
    each worker that ends.  The directory is removed once ``reactor`` has shut down (the
    supervisor has waited for its workers by then), or at exit if it never ran: never while a
    worker may still write to it.  (twistd ends a run stopped by a signal by raising that
    signal again: no ``atexit`` handler runs then.)"""

    def __init__(self, reactor: Any, endpoint: str) -> None:
        self.directory = tempfile.mkdtemp(prefix="tcpfiles-metrics-")
        reactor.addSystemEventTrigger("after", "shutdown", self.remove)
        atexit.register(self.remove)
        self.environment = {ENVIRONMENT: self.directory}
        self.page = serve_metrics_multiprocess(reactor, endpoint, self.directory)

    def worker_died(self, pid: int) -> None:
        """A worker is gone: see :func:`worker_died`."""
        worker_died(pid, self.directory)

    def remove(self) -> None:
        """Remove the directory (once; nothing if it is gone)."""
        shutil.rmtree(self.directory, ignore_errors=True)
