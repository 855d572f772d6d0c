"""Several processes, one page: workers write to one $PROMETHEUS_MULTIPROC_DIR, the parent's
``serve_metrics_multiprocess`` sums them, ``worker_died`` drops a dead one's live gauges."""

from __future__ import annotations

import os
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from tcpfiles.prometheus import ENVIRONMENT, serve_metrics_multiprocess, worker_died
from tests.helpers import temporary_directory

#: One worker: requests counted as they happen, users and messages read from live objects
#: (copied to the directory by sample(), as the sampling service does every second), and a
#: tracker's connections; prints its pid.
WORKER = """
import os, sys
from tcpfiles.core.connections import ConnectionTracker
from tcpfiles.prometheus import PrometheusMetrics
requests, users, said = map(int, sys.argv[1:])
metrics = PrometheusMetrics.from_environ()
assert metrics.multiprocess
metrics.counter("t_requests_total", "Requests.", ("verb",)).labels("GET").inc(requests)
metrics.collect("t_users", "Users.", lambda: users)
metrics.collect("t_said_total", "Said.", lambda: said, kind="counter")
tracker = ConnectionTracker()
tracker.accepted = requests
metrics.track("files", tracker)
metrics.sample()
metrics.sample()  # a counter copied twice is not counted twice
print(os.getpid())
"""


class MultiProcessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = str(temporary_directory(self))

    def worker(self, *numbers: int) -> int:
        env = {**os.environ, ENVIRONMENT: self.directory}
        done = subprocess.run(
            [sys.executable, "-c", WORKER, *map(str, numbers)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return int(done.stdout)

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        listener = serve_metrics_multiprocess(MemoryReactorClock(), "tcp:0", self.directory)
        listener.privilegedStartService()
        request = DummyRequest([b"metrics"])
        site = listener.factory.wrappedFactory  # type: ignore[attr-defined]  # beneath the guard
        page = site.resource.getChildWithDefault(b"metrics", request)
        text = page.render(request).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def test_one_page_sums_the_workers(self) -> None:
        first = self.worker(3, 2, 1)
        self.worker(4, 5, 2)
        page = self.scrape()
        self.assertEqual(page[("t_requests_total", (("verb", "GET"),))], 7)
        self.assertEqual(page[("t_users", ())], 7)
        self.assertEqual(page[("t_said_total", ())], 3)
        accepted = ("tcpfiles_connections_accepted_total", (("behaviour", "files"),))
        self.assertEqual(page[accepted], 7)
        worker_died(first, self.directory)
        page = self.scrape()
        self.assertEqual(page[("t_users", ())], 5)  # the dead worker's users are gone
        self.assertEqual(page[("t_requests_total", (("verb", "GET"),))], 7)  # its counts stay
