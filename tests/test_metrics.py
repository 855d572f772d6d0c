"""Metrics: the kernel's recorder (a no-op when off), the Prometheus one, what each behaviour
reports, the /metrics and /status page, and --metrics on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import connectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from tcpfiles import metrics_page
from tcpfiles.chat.plugin import chat
from tcpfiles.compose import make_service
from tcpfiles.core.auth import LoginLimiter
from tcpfiles.core.guard import GuardedFactory
from tcpfiles.core.metrics import NO_METRICS, Metrics
from tcpfiles.core.plugin import Context
from tcpfiles.files.metrics import RequestMetrics
from tcpfiles.metrics_page import metrics_site
from tcpfiles.prometheus import PrometheusMetrics
from tcpfiles.status import (
    format_status,
    merge_statuses,
    status_file,
    status_of,
    workers_status,
)
from tcpfiles.tap import Options
from tcpfiles.testing import Connection, build_guarded, connect, files_factory, guarded
from tests.helpers import temporary_directory


def samples(metrics: PrometheusMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry, by (name, sorted labels)."""
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: PrometheusMetrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


class NoMetricsTests(SynchronousTestCase):
    """Without --metrics, reporting costs nothing and records nothing."""

    def test_the_default_records_nothing(self) -> None:
        self.assertFalse(NO_METRICS.enabled)
        counter = NO_METRICS.counter("x_total", "x", ("a",))
        counter.labels("1").inc(5)
        NO_METRICS.histogram("y", "y").observe(3.0)
        NO_METRICS.collect("z", "z", lambda: 1.0)
        NO_METRICS.track("files", object())
        self.assertIs(counter, NO_METRICS.histogram("y", "y").labels("q"))

    def test_a_context_reports_to_no_metrics_unless_told(self) -> None:
        self.assertIs(Context(reactor=None, root=None).metrics, NO_METRICS)

    def test_files_records_no_request_without_metrics(self) -> None:
        root = temporary_directory(self)
        self.assertIsNone(files_factory(root).record_request)


class PrometheusMetricsTests(SynchronousTestCase):
    def test_counters_histograms_and_readings_appear_in_the_text_format(self) -> None:
        metrics = PrometheusMetrics()
        metrics.counter("t_things_total", "Things.", ("kind",)).labels("a").inc(3)
        metrics.histogram("t_seconds", "Seconds.", buckets=(1.0, 2.0)).observe(1.5)
        level = [4]
        metrics.collect("t_level", "A level.", lambda: level[0])
        metrics.collect("t_done_total", "Done.", lambda: {("x",): 2, ("y",): 5}, "counter", ["k"])
        self.assertEqual(value(metrics, "t_things_total", kind="a"), 3)
        self.assertEqual(value(metrics, "t_seconds_bucket", le="2.0"), 1)
        self.assertEqual(value(metrics, "t_seconds_bucket", le="1.0"), 0)
        self.assertEqual(value(metrics, "t_level"), 4)
        level[0] = 9  # read when scraped
        self.assertEqual(value(metrics, "t_level"), 9)
        self.assertEqual(value(metrics, "t_done_total", k="y"), 5)
        self.assertNotIn("_created", generate_latest(metrics.registry).decode())

    def test_a_name_is_registered_once(self) -> None:
        metrics = PrometheusMetrics()
        metrics.collect("t_once", "Once.", lambda: 1)
        self.assertRaises(ValueError, metrics.counter, "t_once", "Again.")
        self.assertRaises(ValueError, metrics.collect, "t_k", "K.", lambda: 1, "summary")

    def test_every_guarded_behaviour_gets_its_connections_counted(self) -> None:
        """A behaviour with no metrics code: the guard's tracker is enough."""
        metrics = PrometheusMetrics()
        factory = build_guarded("echo", {"max-per-peer": 2})
        metrics.track("echo", factory.tracker)
        first, second = Connection(factory), Connection(factory)
        Connection(factory)  # over the per-peer limit: refused
        self.assertEqual(value(metrics, "tcpfiles_connections_open", behaviour="echo"), 2)
        self.assertEqual(value(metrics, "tcpfiles_connections_accepted_total", behaviour="echo"), 2)
        refused = ("tcpfiles_connections_refused_total", "max-per-peer")
        self.assertEqual(value(metrics, refused[0], behaviour="echo", reason=refused[1]), 1)
        first.lose()
        second.lose()
        self.assertEqual(value(metrics, "tcpfiles_connections_open", behaviour="echo"), 0)

    def test_a_draining_tracker_counts_its_refusals_as_draining(self) -> None:
        factory = build_guarded("echo")
        factory.tracker.drain()
        Connection(factory)
        self.assertEqual(dict(factory.tracker.refused), {"draining": 1})


class TallyTests(SynchronousTestCase):
    """The lock-free counters and histograms read as prometheus_client's own would."""

    def test_a_histogram_counts_a_value_on_a_bound_in_that_bucket(self) -> None:
        metrics = PrometheusMetrics()
        histogram = metrics.histogram("t_h", "H.", ("k",), (1.0, 2.0))
        for x in (0.5, 1.0, 1.5, 3.0):
            histogram.labels("a").observe(x)
        self.assertEqual(value(metrics, "t_h_bucket", k="a", le="1.0"), 2)
        self.assertEqual(value(metrics, "t_h_bucket", k="a", le="2.0"), 3)
        self.assertEqual(value(metrics, "t_h_bucket", k="a", le="+Inf"), 4)
        self.assertEqual(value(metrics, "t_h_count", k="a"), 4)
        self.assertEqual(value(metrics, "t_h_sum", k="a"), 6.0)

    def test_counters_check_their_labels_and_only_go_up(self) -> None:
        counter = PrometheusMetrics().counter("t_c_total", "C.", ("a", "b"))
        self.assertRaises(ValueError, counter.labels, "only-one")
        self.assertRaises(ValueError, counter.labels("x", "y").inc, -1)

    def test_several_processes_get_prometheus_clients_own(self) -> None:
        """Their values must reach the shared directory."""
        from prometheus_client import Counter, Histogram

        metrics = PrometheusMetrics(multiprocess=True)
        self.assertIsInstance(metrics.counter("t_m_total", "M."), Counter)
        self.assertIsInstance(metrics.histogram("t_mh", "M."), Histogram)


class ReportedTests(SynchronousTestCase):
    """What each part of the server reports."""

    def test_files_requests_by_verb_and_outcome_bytes_and_durations(self) -> None:
        metrics = PrometheusMetrics()
        record = RequestMetrics(metrics)
        record("GET a.txt", "OK", 100, 0.002)
        record("get b.txt", "OK", 50, 0.2)
        record("GET nope", "ERR not-found", 40, 0.0)
        record("PUT 10 abc x", "OK", 10, 0.5)
        record("PUT 10 abc y", "ERR exists", 30, 0.0)
        record("PUT 10 abc z", "aborted: connection lost", 4, 1.0)
        record("FROB \x1b[2J", "ERR bad-request", 35, 0.0)
        self.assertEqual(
            value(metrics, "tcpfiles_files_requests_total", verb="GET", outcome="OK"), 2
        )
        self.assertEqual(
            value(
                metrics, "tcpfiles_files_requests_total", verb="other", outcome="ERR bad-request"
            ),
            1,
        )
        self.assertEqual(value(metrics, "tcpfiles_files_bytes_total", direction="in"), 14)
        self.assertEqual(value(metrics, "tcpfiles_files_bytes_total", direction="out"), 255)
        self.assertEqual(value(metrics, "tcpfiles_files_transfer_seconds_count", verb="GET"), 2)
        self.assertEqual(value(metrics, "tcpfiles_files_transfer_seconds_count", verb="PUT"), 1)
        self.assertEqual(
            value(metrics, "tcpfiles_files_transfer_seconds_bucket", verb="GET", le="0.005"), 1
        )

    def test_a_list_cut_short_is_one_outcome_whatever_its_count(self) -> None:
        """The log says how far a failed LIST got; a label with the count would make a series
        per count, which a client could multiply."""
        metrics = PrometheusMetrics()
        record = RequestMetrics(metrics)
        for count in (3, 4, 5000):
            record("LIST big", f"OK failed at {count} entries", 10, 0.1)
        found = {
            labels: v
            for (name, labels), v in samples(metrics).items()
            if name == "tcpfiles_files_requests_total"
        }
        self.assertEqual(found, {(("outcome", "OK failed"), ("verb", "LIST")): 3})

    def test_the_files_server_records_each_request_it_logs(self) -> None:
        root = temporary_directory(self)
        (root / "a.txt").write_bytes(b"hello")
        metrics = PrometheusMetrics()
        factory = files_factory(root)
        factory.record_request = RequestMetrics(metrics)
        connection = Connection(factory, clock=factory.clock)
        connection.feed(b"GET a.txt\nGET missing\n" + b"NOPE\n" * 12)
        self.assertEqual(
            value(metrics, "tcpfiles_files_requests_total", verb="GET", outcome="OK"), 1
        )
        # past the bad requests a connection logs, each is still counted
        self.assertEqual(
            value(
                metrics, "tcpfiles_files_requests_total", verb="other", outcome="ERR bad-request"
            ),
            12,
        )

    def test_chat_reports_its_users_and_messages(self) -> None:
        metrics = PrometheusMetrics()
        clock = MemoryReactorClock()
        factory = build_guarded(chat, context=Context(clock, None, metrics=metrics))
        alice, bob = Connection(factory), Connection(factory, peer=("192.0.2.8", 1))
        alice.feed(b"/nick alice\n")
        bob.feed(b"/nick bob\nhello\n/me waves\n/msg alice psst\n/who\n")
        self.assertEqual(value(metrics, "tcpfiles_chat_users"), 2)
        self.assertEqual(value(metrics, "tcpfiles_chat_messages_total"), 3)
        alice.feed(b"/quit\n")
        alice.lose()
        self.assertEqual(value(metrics, "tcpfiles_chat_users"), 1)

    def test_the_login_limiter_counts_failures(self) -> None:
        limiter = LoginLimiter(task.Clock().seconds)
        limiter.failed("192.0.2.1", "alice")
        limiter.failed("192.0.2.2")
        self.assertEqual(limiter.failures, 2)


class StatusTests(SynchronousTestCase):
    def test_a_download_in_flight_is_shown_with_its_rate(self) -> None:
        root = temporary_directory(self)
        (root / "big").write_bytes(b"x" * (3 << 20))
        clock = task.Clock()
        factory = guarded(files_factory(root, clock), clock)
        protocol, transport = connect(factory)
        protocol.dataReceived(b"GET big\n")
        assert transport.producer is not None
        transport.producer.resumeProducing()  # one chunk read by the peer, then nothing
        clock.advance(2.0)
        status = status_of({"files": factory.tracker}, {"tcpfiles_chat_users": 3}, 10.0)
        self.assertEqual(status["connections"], {"files": 1})
        [transfer] = status["transfers"]
        self.assertEqual(transfer["request"], "GET big")
        self.assertEqual(transfer["peer"], "192.0.2.7:40000")
        self.assertEqual(transfer["size"], 3 << 20)
        self.assertTrue(0 < transfer["bytes"] < 3 << 20, transfer)
        self.assertEqual(transfer["rate"], transfer["bytes"] / 2.0)
        text = format_status(status)
        self.assertIn("connections: files 1", text)
        self.assertIn("transfers in flight: 1", text)
        self.assertIn("files 192.0.2.7:40000 GET big: ", text)
        self.assertIn("of 3.0 MiB in 2.0 s", text)
        self.assertIn("chat users: 3", text)
        protocol.connectionLost(connectionDone)
        self.assertEqual(status_of({"files": factory.tracker}, {}, 11.0)["transfers"], [])

    def test_a_third_partys_activity_and_tracker_may_say_less(self) -> None:
        class Busy:
            def activity(self) -> dict[str, Any]:
                return {"request": "FROB", "bytes": 10, "seconds": 2.0}

        class Tracker:
            active = {Busy(): "192.0.2.1"}

        status = status_of({"frob": Tracker(), "udp": object()}, {}, 0.0)
        self.assertEqual(status["connections"], {"frob": 1, "udp": 0})
        self.assertIn("  frob ? FROB: 10 B of 0 B in 2.0 s (5 B/s)", format_status(status))
        metrics = PrometheusMetrics()
        metrics.track("udp", object())
        self.assertEqual(value(metrics, "tcpfiles_connections_open", behaviour="udp"), 0)

    def test_an_upload_in_flight_is_shown(self) -> None:
        root = temporary_directory(self)
        factory = guarded(files_factory(root, writable=True))
        connection = Connection(factory)
        digest = "0" * 64
        connection.feed(f"PUT 100 {digest} up.bin\n".encode() + b"y" * 30)
        [transfer] = status_of({"files": factory.tracker}, {}, 0.0)["transfers"]
        self.assertEqual((transfer["bytes"], transfer["size"]), (30, 100))
        self.assertTrue(transfer["request"].startswith("PUT 100 "))
        connection.lose()


class PageTests(SynchronousTestCase):
    def render(self, site: Any, path: bytes) -> tuple[bytes, bytes]:
        request = DummyRequest([path])
        body = site.resource.getChildWithDefault(path, request).render(request)
        [kind] = request.responseHeaders.getRawHeaders(b"content-type") or [b""]
        return kind, body

    def test_metrics_and_status_are_served(self) -> None:
        metrics = PrometheusMetrics()
        metrics.collect("t_users", "Users.", lambda: 2)
        site = metrics_site(metrics.registry, lambda: metrics.status(task.Clock()))
        kind, body = self.render(site, b"metrics")
        self.assertTrue(kind.startswith(b"text/plain"))
        self.assertIn(b"t_users 2.0", body)
        kind, body = self.render(site, b"status")
        self.assertEqual(kind, b"application/json")
        self.assertEqual(json.loads(body)["gauges"], {"t_users": 2.0})


class OptionTests(SynchronousTestCase):
    def parse(self, *argv: str) -> Any:
        options = Options()
        options.parseOptions(["--root", str(temporary_directory(self)), *argv])
        return options

    def test_metrics_takes_an_endpoint(self) -> None:
        options = self.parse("--metrics", "tcp:0:interface=127.0.0.1")
        self.assertEqual(options["metrics"], "tcp:0:interface=127.0.0.1")
        self.assertIsNone(self.parse()["metrics"])
        self.assertRaises(usage.UsageError, self.parse, "--metrics", "nonsense:1")

    def test_without_prometheus_client_the_error_names_the_extra(self) -> None:
        saved = sys.modules["prometheus_client"]
        self.addCleanup(sys.modules.__setitem__, "prometheus_client", saved)
        sys.modules["prometheus_client"] = None  # type: ignore[assignment]  # import fails
        with self.assertRaises(usage.UsageError) as raised:
            self.parse("--metrics", "tcp:9100")
        self.assertIn("pip install 'tcpfiles[metrics]'", str(raised.exception))

    def test_tcpfiles_works_without_prometheus_client(self) -> None:
        """Nothing imports it unless metrics are asked for."""
        root = temporary_directory(self)
        program = (
            "import sys; sys.modules['prometheus_client'] = None\n"
            "from twisted.internet.testing import MemoryReactorClock\n"
            "import tcpfiles.tap, tcpfiles.cli, tcpfiles.status\n"
            "from tcpfiles.compose import make_service\n"
            f"make_service(MemoryReactorClock(), {str(root)!r}, ['files', 'chat'])\n"
            "print('ok')\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
        )
        self.assertEqual((result.stdout, result.stderr), ("ok\n", ""))


class ComposeTests(SynchronousTestCase):
    def test_make_service_reports_every_behaviour_to_a_recorder(self) -> None:
        metrics = PrometheusMetrics()
        make_service(
            MemoryReactorClock(), str(temporary_directory(self)), ["files", "chat"], metrics=metrics
        )
        self.assertEqual(set(metrics.trackers), {"files", "chat"})
        names = {name for name, _labels in samples(metrics)}
        for name in (
            "tcpfiles_uploads_in_flight",
            "tcpfiles_hash_queue",
            "tcpfiles_login_failures_total",
            "tcpfiles_chat_users",
            "tcpfiles_files_bytes_total",  # requests appear once one is answered
        ):
            self.assertIn(name, names)

    def test_a_multiprocess_recorder_is_sampled_while_the_server_runs(self) -> None:
        metrics = PrometheusMetrics(multiprocess=True)
        top = make_service(
            MemoryReactorClock(), str(temporary_directory(self)), [], metrics=metrics
        )
        self.assertEqual([type(s).__name__ for s in top][-1:], ["_Sampling"])

    def test_a_recorder_of_your_own(self) -> None:
        """Any Metrics will do: the kernel names no library."""
        seen: list[str] = []

        class Names(Metrics):
            enabled = True

            def collect(self, name: str, *args: Any, **kwargs: Any) -> None:
                seen.append(name)

        make_service(
            MemoryReactorClock(), str(temporary_directory(self)), ["chat"], metrics=Names()
        )
        self.assertIn("tcpfiles_chat_users", seen)


SOME_TRANSFER = {"peer": "127.0.0.1:5", "bytes": 1, "size": 9, "seconds": 0.5, "rate": 2.0}


class MergedStatusTests(SynchronousTestCase):
    """The parent of --workers answers /status with every worker's last one, merged."""

    def test_connections_and_gauges_summed_transfers_kept_with_their_worker(self) -> None:
        one = {
            "time": 5.0,
            "connections": {"files": 2, "chat": 1},
            "transfers": [{"behaviour": "files", "request": "GET a", **SOME_TRANSFER}],
            "gauges": {"tcpfiles_chat_users": 1, "tcpfiles_uploads_in_flight": 0},
        }
        two = {
            "time": 6.0,
            "connections": {"files": 3},
            "transfers": [],
            "gauges": {"tcpfiles_chat_users": 2, "tcpfiles_uploads_in_flight": 1},
        }
        merged = merge_statuses({20: two, 10: one})
        self.assertEqual(merged["workers"], 2)
        self.assertEqual(merged["time"], 6.0)
        self.assertEqual(merged["connections"], {"files": 5, "chat": 1})
        self.assertEqual(
            merged["gauges"], {"tcpfiles_chat_users": 3, "tcpfiles_uploads_in_flight": 1}
        )
        self.assertEqual(
            merged["transfers"],
            [{"behaviour": "files", "request": "GET a", **SOME_TRANSFER, "worker": 10}],
        )
        self.assertIn("workers: 2\n", format_status(merged))
        self.assertEqual(merge_statuses({})["workers"], 0)

    def test_read_from_the_directory_skipping_what_is_not_a_status(self) -> None:
        directory = temporary_directory(self)
        (directory / status_file(41)).write_text(json.dumps({"connections": {"files": 1}}))
        (directory / status_file(42)).write_text("{half")  # being replaced: skipped
        (directory / (status_file(43) + ".new")).write_text("{}")
        (directory / "counter_41.db").write_bytes(b"\0")
        merged = workers_status(str(directory))
        self.assertEqual((merged["workers"], merged["connections"]), (1, {"files": 1}))

    def test_a_worker_writes_its_status_and_removes_it_when_stopped(self) -> None:
        directory = temporary_directory(self)
        self.patch(os, "environ", {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)})
        metrics = PrometheusMetrics(multiprocess=True)
        clock = task.Clock()
        sampling = metrics.sampling(clock)
        sampling.startService()
        self.assertEqual(workers_status(str(directory))["workers"], 1)
        sampling.stopService()
        self.assertEqual(workers_status(str(directory))["workers"], 0)


class PageServiceTests(SynchronousTestCase):
    """The metrics page is served behind the kernel's guard, and says so when it is reachable
    from elsewhere than this machine."""

    def listen(self, description: str) -> tuple[Any, list[dict[str, Any]]]:
        events: list[dict[str, Any]] = []
        self.patch(metrics_page, "log", Logger(observer=events.append))
        trackers: list[Any] = []
        reactor = MemoryReactorClock()
        site = metrics_site(PrometheusMetrics().registry, reactor=reactor)
        service = metrics_page.PageService(description, site, reactor, trackers)
        service.privilegedStartService()
        self.assertEqual(trackers, [service.factory.tracker])  # drained, counted for fds
        return service, events

    def test_every_address_is_warned_about(self) -> None:
        _, events = self.listen("tcp:0")  # no interface=: every address
        [warning] = events
        self.assertEqual(warning["log_level"], LogLevel.warn)
        self.assertIn("not loopback", warning["log_format"])

    def test_loopback_is_not(self) -> None:
        _, events = self.listen(r"tcp6:0:interface=\:\:1")
        self.assertEqual(events, [])

    def test_connections_are_limited_by_the_guard(self) -> None:
        service, _ = self.listen(r"tcp6:0:interface=\:\:1")
        factory = service.factory
        self.assertIsInstance(factory, GuardedFactory)
        self.assertEqual(factory.settings, metrics_page.PAGE_LIMITS)
        peer = IPv4Address("TCP", "10.0.0.5", 40000)
        kept = [factory.buildProtocol(peer) for _ in range(metrics_page.PAGE_LIMITS.max_per_peer)]
        for protocol in kept:
            protocol.makeConnection(StringTransport(peerAddress=peer))
        refused = factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        refused.makeConnection(transport)
        self.assertTrue(transport.disconnecting)
