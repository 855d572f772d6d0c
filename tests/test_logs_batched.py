"""tcpfiles.logs' batched text log: twistd's lines, written in batches, none lost on a clean exit;
and twistd tcpfiles using it wherever twistd would use its own text observer."""

from __future__ import annotations

import io
import shutil
import tempfile
import threading
from typing import Any

from twisted.application import service
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    formatTime,
    textFileLogObserver,
)
from twisted.logger import _logger as twisted_logger_module
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles import logs, tap
from tcpfiles.core.fdlimit import FdLimitCheck


class ThreadedClock(MemoryReactorClock):
    """A memory reactor that also runs ``callFromThread`` (queued, like the real one)."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: list[tuple[Any, tuple[Any, ...]]] = []

    def callFromThread(self, f: Any, *args: Any) -> None:  # noqa: N802 - Twisted's name
        self.from_threads.append((f, args))

    def run_from_threads(self) -> None:
        while self.from_threads:
            f, args = self.from_threads.pop(0)
            f(*args)

    def advance(self, amount: float) -> None:
        """As the real reactor, which runs what threads handed it at every turn."""
        self.run_from_threads()
        super().advance(amount)

    def shut_down(self) -> None:
        """Run the 'after shutdown' triggers, as the real reactor does once it has stopped."""
        for trigger, args, kwargs in self.triggers.get("after", {}).get("shutdown", []):
            trigger(*args, **kwargs)


def log_events(observer: Any, at: float) -> None:
    """The kinds of event a server logs: a request (braces doubled or none), one with fields,
    one of two lines, a warning, a failure with its traceback, and odd ones made by hand.
    (Logger sets log_time itself, from its module's ``time``.)"""
    log = Logger(namespace="tcpfiles.files", observer=LogPublisher(observer))
    log.info("127.0.0.1:4000 GET {{odd}} name -> OK 6 bytes in 0.001s", peer="127.0.0.1:4000")
    log.info("127.0.0.1:4000 GET plain -> OK 6 bytes in 0.001s", log_time=at)
    log.info("two\nlines", log_time=at)
    observer({"log_format": "unbalanced } brace", "log_time": at, "log_namespace": "x"})
    log.info("", log_time=at)
    log.emit(LogLevel.error, "an error", log_time=at)
    log.info("a number system", log_system=42, log_time=at)
    observer({"log_format": "no level, no namespace", "log_time": at})
    observer({"log_format": b"bytes format", "log_time": at, "log_level": LogLevel.info})
    observer({"log_format": None, "log_time": at})
    observer({"log_text": "no format at all", "log_time": at})
    log.info("{count} more bad requests", count=3, log_time=at)
    log.emit(LogLevel.info, "with a system", log_system="-", log_time=at + 0.5)
    try:
        1 / 0  # noqa: B018 - a real traceback
    except ZeroDivisionError:
        log.failure("it failed", Failure(), log_time=at + 1.2)


class SameLinesTests(SynchronousTestCase):
    """Every line is the one twistd's own text observer writes."""

    def test_same_text_as_twistd_observer(self) -> None:
        """Request lines, fields, a system, a multi-line traceback: byte for byte."""
        theirs, ours = io.StringIO(), io.StringIO()
        reactor = ThreadedClock()
        self.patch(twisted_logger_module, "time", lambda: 1_796_000_000.5)  # Logger's clock
        log_events(textFileLogObserver(theirs), at=1_796_000_000.25)
        observer = logs.batched_text_observer(ours, reactor)
        log_events(observer, at=1_796_000_000.25)
        reactor.advance(logs.FLUSH_DELAY)
        self.assertEqual(ours.getvalue(), theirs.getvalue())
        self.assertIn("ZeroDivisionError", ours.getvalue())

    def test_time_formatted_once_per_second_same_text(self) -> None:
        """Within a second and across seconds, what formatTime says."""
        format_time = logs.cached_time_format()
        for when in (1_796_000_000.0, 1_796_000_000.999, 1_796_000_001.0, 1_700_000_000.5, None):
            self.assertEqual(format_time(when), formatTime(when, logs.timeFormatRFC3339))


class BatchingTests(SynchronousTestCase):
    """Lines wait at most FLUSH_DELAY; warnings, a full batch and shutdown write at once."""

    def setUp(self) -> None:
        self.out = io.StringIO()
        self.reactor = ThreadedClock()
        self.file = logs.BatchedFile(self.out, self.reactor)

    def test_written_together_after_the_delay(self) -> None:
        """Two lines, one write, one timer."""
        self.file.write("one\n")
        self.file.write("two\n")
        self.assertEqual(self.out.getvalue(), "")
        self.reactor.run_from_threads()
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        self.reactor.advance(logs.FLUSH_DELAY)
        self.assertEqual(self.out.getvalue(), "one\ntwo\n")
        self.file.write("three\n")
        self.reactor.advance(logs.FLUSH_DELAY)
        self.assertEqual(self.out.getvalue(), "one\ntwo\nthree\n")

    def test_urgent_written_at_once_with_what_waited(self) -> None:
        """A warning takes the lines before it along, in order."""
        self.file.write("info\n")
        self.file.write("warning\n", urgent=True)
        self.assertEqual(self.out.getvalue(), "info\nwarning\n")

    def test_warnings_are_urgent(self) -> None:
        """Through the observer: a warning is written without waiting."""
        log = Logger(observer=logs.batched_text_observer(self.out, self.reactor))
        log.info("quiet")
        self.assertEqual(self.out.getvalue(), "")
        log.warn("loud")
        self.assertIn("quiet", self.out.getvalue())
        self.assertIn("loud", self.out.getvalue())

    def test_a_full_batch_is_written(self) -> None:
        """FLUSH_BYTES gathered: written without waiting."""
        line = "x" * 99 + "\n"
        for _ in range(logs.FLUSH_BYTES // len(line) + 1):
            self.file.write(line)
        self.assertGreaterEqual(len(self.out.getvalue()), logs.FLUSH_BYTES)

    def test_each_write_is_whole_on_a_shared_pipe(self) -> None:
        """A batch is written in pieces of at most WHOLE_WRITE bytes, each of whole events (a
        multi-line event never cut), so that workers sharing a pipe never cut each other's
        lines; one event longer than that is a write of its own."""
        writes: list[str] = []

        class Recording(io.StringIO):
            def write(self, text: str) -> int:
                writes.append(text)
                return len(text)

        batched = logs.BatchedFile(Recording(), self.reactor)
        events = [f"{n:04d} " + "x" * 90 + "\n\tcontinued\n" for n in range(200)]
        events.insert(100, "y" * (logs.WHOLE_WRITE + 10) + "\n")
        for text in events:
            batched.write(text)
        batched.flush()
        self.assertEqual("".join(writes), "".join(events))
        self.assertGreater(len(writes), 5)
        for piece in writes:
            self.assertTrue(len(piece.encode()) <= logs.WHOLE_WRITE or piece == events[100])
            self.assertTrue(piece.endswith("continued\n") or piece == events[100])
        self.assertEqual(list(logs.whole_writes(["é" * 3000 + "\n"] * 2)), ["é" * 3000 + "\n"] * 2)

    def test_after_shutdown_every_line_at_once(self) -> None:
        """Once the reactor has stopped its timers never run: lines are written as they come."""
        self.file.write("before\n")
        self.reactor.shut_down()
        self.assertEqual(self.out.getvalue(), "before\n")
        self.file.write("Server Shut Down.\n")
        self.assertEqual(self.out.getvalue(), "before\nServer Shut Down.\n")

    def test_from_another_thread_the_timer_is_set_by_the_reactor(self) -> None:
        """A line logged in the thread pool arms the timer through callFromThread."""
        worker = threading.Thread(target=self.file.write, args=("from a thread\n",))
        worker.start()
        worker.join(10)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.run_from_threads()
        self.reactor.advance(logs.FLUSH_DELAY)
        self.assertEqual(self.out.getvalue(), "from a thread\n")

    def test_logged_while_writing_is_written_after_no_deadlock(self) -> None:
        """Twisted's SIGTERM handler logs from inside whatever the main thread was doing,
        a flush's write included: that line is written by the same flush, after."""
        batched: list[logs.BatchedFile] = []

        class Interrupted(io.StringIO):
            def write(self, text: str) -> int:
                if not self.getvalue():  # the "signal" arrives during the first write
                    batched[0].write("Received SIGTERM, shutting down.\n", urgent=True)
                return super().write(text)

        out = Interrupted()
        batched.append(logs.BatchedFile(out, self.reactor))
        batched[0].write("one\n")
        worker = threading.Thread(target=batched[0].flush, daemon=True)
        worker.start()
        worker.join(10)
        self.assertFalse(worker.is_alive(), "the flush waited for itself")
        self.assertEqual(out.getvalue(), "one\nReceived SIGTERM, shutting down.\n")

    def test_bytes_file_gets_utf8(self) -> None:
        """A binary file (twistd's LogFile may be one) gets UTF-8, as twistd's observer does."""
        out = io.BytesIO()
        batched = logs.BatchedFile(out, self.reactor)
        batched.write("é\n", urgent=True)
        self.assertEqual(out.getvalue(), "é\n".encode())


def _twistd_options(test: SynchronousTestCase, **twistd: Any) -> tap.Options:
    root = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, root)
    test.patch(FdLimitCheck, "privilegedStartService", lambda self: None)
    options = tap.Options()
    options.parseOptions(["--root", root, "--listen", "tcp:0:interface=127.0.0.1"])
    parent = usage.Options()  # what twistd's ServerOptions holds
    parent.update({"nodaemon": True, "logfile": None, "logger": None, "syslog": False})
    parent.update(twistd)
    options.parent = parent
    return options


class TapTests(SynchronousTestCase):
    """twistd tcpfiles offers the batched observer where twistd would use its text one."""

    def application(self, **twistd: Any) -> Any:
        reactor = ThreadedClock()
        top = tap.makeService(_twistd_options(self, **twistd), reactor=reactor)
        application = service.Application("tcpfiles")
        top.setServiceParent(application)
        return application

    def test_default_is_batched_to_stdout(self) -> None:
        """twistd -n: the batched observer, on standard output."""
        observer = self.application().getComponent(ILogObserver)
        self.assertIsInstance(observer, logs._BatchedTextObserver)

    def test_logfile_is_twistds_rotated_file(self) -> None:
        """--logfile FILE: twistd's rotating LogFile, batched."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.patch(logs.signal, "signal", lambda *args: None)  # not this test process's SIGUSR1
        observer = self.application(logfile=f"{directory}/t.log").getComponent(ILogObserver)
        self.assertEqual(observer.out.out.path, f"{directory}/t.log")
        observer.out.out.close()

    def test_logger_or_syslog_left_alone(self) -> None:
        """--logger or --syslog: twistd's choice stands."""
        self.assertIsNone(self.application(logger=logs.json_logger).getComponent(ILogObserver))
        self.assertIsNone(self.application(syslog=True).getComponent(ILogObserver))

    def test_not_under_twistd_nothing_offered(self) -> None:
        """An embedder's makeService leaves logging to the embedder."""
        options = _twistd_options(self)
        del options.parent
        top = tap.makeService(options, reactor=ThreadedClock())
        application = service.Application("tcpfiles")
        top.setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver))
