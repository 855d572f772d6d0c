"""tcpfiles.logs: one JSON object per line, for ``twistd --logger`` and log shippers."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

from twisted.logger import Logger, LogLevel, LogPublisher, eventFromJSON, eventsFromJSONLogFile
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles import logs


def temporary_directory(case: SynchronousTestCase) -> str:
    path = tempfile.mkdtemp(prefix="tcpfiles-test-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


def log_a_request(observer: Any) -> dict[str, Any]:
    """Log an event shaped like the files server's per-request one to ``observer``; the event."""
    seen: list[dict[str, Any]] = []
    publisher = LogPublisher(observer, seen.append)
    Logger(namespace="tcpfiles.files", observer=publisher).info(
        "127.0.0.1:4000 GET {{odd}} name -> OK 6 bytes in 0.001s",
        peer="127.0.0.1:4000",
        request="GET {odd} name",
        outcome="OK",
        nbytes=6,
        seconds=0.00125,
    )
    return seen[0]


class JSONLinesTests(SynchronousTestCase):
    """Each event becomes one line of JSON, with every field and the text."""

    def test_one_line_per_event_with_every_field(self) -> None:
        """No record separator, one newline; the fields, twisted's own, and log_text."""
        out = io.StringIO()
        event = log_a_request(logs.json_lines(out))
        text = out.getvalue()
        self.assertEqual(text.count("\n"), 1)
        self.assertTrue(text.startswith("{") and text.endswith("}\n"), text)
        line = json.loads(text)
        self.assertEqual(
            {key: line[key] for key in ("peer", "request", "outcome", "nbytes", "seconds")},
            {
                "peer": "127.0.0.1:4000",
                "request": "GET {odd} name",
                "outcome": "OK",
                "nbytes": 6,
                "seconds": 0.00125,
            },
        )
        self.assertEqual(line["log_text"], "127.0.0.1:4000 GET {odd} name -> OK 6 bytes in 0.001s")
        self.assertEqual(
            (line["log_namespace"], line["log_level"]["name"]), ("tcpfiles.files", "info")
        )
        self.assertEqual(eventFromJSON(text)["log_level"], LogLevel.info)  # twisted reads it back
        self.assertNotIn("log_text", event)  # the event other observers see is left alone

    def test_twisted_reads_the_lines_back(self) -> None:
        """eventsFromJSONLogFile with no record separator gives back each event, fields and all."""
        out = io.StringIO()
        observer = logs.json_lines(out)
        log_a_request(observer)
        log_a_request(observer)
        out.seek(0)
        events = list(eventsFromJSONLogFile(out, recordSeparator=""))
        self.assertEqual([event["request"] for event in events], ["GET {odd} name"] * 2)
        self.assertEqual(events[0]["log_level"], LogLevel.info)

    def test_json_logger_writes_to_standard_output_by_default(self) -> None:
        """$TCPFILES_JSON_LOG unset or "-": the stdout of the moment twistd calls the factory."""
        for environ in ({}, {logs.ENVIRONMENT: "-"}):
            out = io.StringIO()
            self.patch(sys, "stdout", out)
            self.patch(os, "environ", environ)
            observer = logs.json_logger()
            self.patch(sys, "stdout", io.StringIO())  # as twistd redirects it next
            log_a_request(observer)
            self.assertEqual(json.loads(out.getvalue())["request"], "GET {odd} name")


class FileTests(SynchronousTestCase):
    """$TCPFILES_JSON_LOG: appended to, reopened after SIGUSR1 (for logrotate)."""

    def setUp(self) -> None:
        self.directory = temporary_directory(self)
        self.path = os.path.join(self.directory, "events.json")
        self.handlers: dict[int, Any] = {}
        self.patch(signal, "signal", self.handlers.__setitem__)
        self.patch(os, "environ", {logs.ENVIRONMENT: self.path})

    def lines(self, path: str) -> list[dict[str, Any]]:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    def test_appends_and_reopens_after_sigusr1(self) -> None:
        """Lines are appended to what is there; after SIGUSR1 the next goes to a new file of
        the same name, as logrotate expects once it has moved the old one away."""
        with open(self.path, "w") as f:
            f.write('{"earlier": true}\n')
        observer = logs.json_logger()
        self.addCleanup(observer._outFile.close)
        log_a_request(observer)
        os.rename(self.path, self.path + ".1")
        log_a_request(observer)  # still the open file, now events.json.1
        self.handlers[signal.SIGUSR1](signal.SIGUSR1, None)
        self.assertEqual(self.lines(self.path + ".1")[0], {"earlier": True})
        self.assertEqual(len(self.lines(self.path + ".1")), 3)
        self.assertFalse(os.path.exists(self.path))  # reopened at the next line, not before
        log_a_request(observer)
        [line] = self.lines(self.path)
        self.assertEqual(line["outcome"], "OK")

    def test_a_file_that_cannot_be_reopened_keeps_the_old_one(self) -> None:
        """The directory is gone: a warning line, and the lines go on to the file still open."""
        os.mkdir(os.path.join(self.directory, "logs"))
        path = os.path.join(self.directory, "logs", "events.json")
        self.patch(os, "environ", {logs.ENVIRONMENT: path})
        observer = logs.json_logger()
        self.addCleanup(observer._outFile.close)
        moved = os.path.join(self.directory, "moved")
        os.rename(os.path.dirname(path), moved)
        self.handlers[signal.SIGUSR1](signal.SIGUSR1, None)
        log_a_request(observer)
        warning, request = self.lines(os.path.join(moved, "events.json"))
        self.assertEqual(warning["log_level"]["name"], "warn")
        self.assertIn(f"cannot reopen {path}: No such file or directory", warning["log_text"])
        self.assertEqual(request["nbytes"], 6)
