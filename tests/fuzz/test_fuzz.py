"""A bounded run of our fuzzer (tests/fuzz/fuzzer.py) in the suite: in memory and on twistd."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.cases import temporary_directory
from tests.fuzz import fuzzer


class FuzzTests(SynchronousTestCase):
    """A bounded run of the fuzzer, in memory and on twistd."""

    def setUp(self) -> None:
        self.tmp_path = temporary_directory(self)

    def test_memory_fuzz_finds_no_new_crash(self) -> None:
        """600 random and mutated connections over every TCP behaviour: no exception, no logged
        failure (except crashes already filed in fuzzer.KNOWN)."""
        report = fuzzer.run_memory(600, seed=10, base=self.tmp_path, time_limit=60)
        assert report.cases == 600 or report.seconds > 60  # a slow machine runs fewer, not fails
        assert report.cases >= 50
        assert set(report.per_behaviour) == set(fuzzer.BEHAVIOURS)
        found = report.distinct(report.unknown())
        assert not found, "\n\n".join(crash.reproducer() for crash in found.values())

    def test_real_twistd_fuzz_log_is_clean(self) -> None:
        """200 fuzzed connections to one twistd serving every TCP behaviour: it still answers, and
        its log has no unhandled error or traceback (except fuzzer.KNOWN)."""
        done, seconds, log = fuzzer.run_real(200, seed=11, base=self.tmp_path, time_limit=60)
        assert done == 200 or seconds > 60  # a slow machine runs fewer, not fails
        assert done >= 20
        assert "-> OK" in log  # the cases reached the files service

    def test_detects_a_crash(self) -> None:
        """The fuzzer is not blind: a protocol that raises on NUL is reported with its input."""
        from tcpfiles.echo.protocol import EchoProtocol

        real = EchoProtocol.dataReceived

        def crashing(self, data: bytes) -> None:
            if b"\x00" in data:
                raise RuntimeError("planted")
            real(self, data)

        self.patch(EchoProtocol, "dataReceived", crashing)
        report = fuzzer.run_memory(300, seed=12, base=self.tmp_path, time_limit=60)
        planted = [c for c in report.unknown() if "planted" in c.error]
        assert planted and planted[0].behaviour in ("echo", "upper")

    def test_log_tracebacks_are_found(self) -> None:
        """A twistd log's Unhandled Error blocks are found; none is a known cause any more."""
        log = (
            "2026 [tcpfiles.files#info] fine\n"
            "2026 [-] Unhandled Error\n\tTraceback (most recent call last):\n"
            "\tbuiltins.ValueError: Exceeds the limit (4300 digits) for integer string\n"
            "2026 [tcpfiles.files#info] fine\n"
            "2026 [-] Unhandled Error\n\tTraceback (most recent call last):\n\tKeyError: 'x'\n"
        )
        blocks = fuzzer.log_tracebacks(log)
        assert len(blocks) == 2
        assert [fuzzer.known_cause(b) is None for b in blocks] == [True, True]  # nothing is known
