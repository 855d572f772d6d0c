"""JSON logs from a real twistd: ``--logger tcpfiles.logs.json_logger`` (docs/operations.md)."""

from __future__ import annotations

import json
import os
import signal
import time

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Wire

JSON_LOGGER = ("--logger", "tcpfiles.logs.json_logger")


class JSONLogTests(E2ETestCase):
    """Every line of the log is one JSON object; the per-request events carry their fields."""

    def test_every_line_is_json_with_the_request_fields(self) -> None:
        """GET of a file, GET of a missing one, LIST: one event each with peer, request, outcome,
        nbytes and seconds, and the line the text log would show as log_text."""
        (self.root / "notes.txt").write_bytes(b"hello\n")
        env = {k: v for k, v in os.environ.items() if k != "TCPFILES_JSON_LOG"}  # stdout
        before = time.time()
        server = self.start_server(env=env, twistd_options=JSON_LOGGER)
        wire = Wire(server.port)
        self.addCleanup(wire.close)
        peer = f"127.0.0.1:{wire.sock.getsockname()[1]}"
        self.assertEqual(wire.get("notes.txt"), b"hello\n")
        wire.send(b"GET missing.txt\n")
        missing = wire.line() + b"\n"
        self.assertTrue(missing.startswith(b"ERR not-found "), missing)
        wire.send(b"LIST\n")
        listing = [wire.line() + b"\n" for _ in range(3)]
        self.assertEqual((listing[0], listing[2]), (b"OK list\n", b"END 1\n"))
        server.wait_count(r'"request": "LIST"', 1)
        self.assertIn(server.stop(), (0, -signal.SIGTERM))

        events = [json.loads(line) for line in server.log]  # every line, or it raises
        self.assertTrue(all(isinstance(event, dict) for event in events))
        requests = [event for event in events if "request" in event]
        wanted = [  # nbytes: a GET's body, an ERR's line, a LIST's status line and rows
            ("GET notes.txt", "OK", len(b"hello\n")),
            ("GET missing.txt", "ERR not-found", len(missing)),
            ("LIST", "OK", len(listing[0] + listing[1])),
        ]
        self.assertEqual([(e["request"], e["outcome"], e["nbytes"]) for e in requests[:3]], wanted)
        for event in requests[:3]:
            self.assertEqual(event["peer"], peer)
            self.assertEqual(event["log_namespace"], "tcpfiles.files")
            self.assertEqual(event["log_level"]["name"], "info")
            self.assertIsInstance(event["seconds"], float)
            self.assertTrue(0 <= event["seconds"] < 20, event)
            self.assertTrue(before <= event["log_time"] <= time.time(), event)
            self.assertEqual(
                event["log_text"],
                f"{peer} {event['request']} -> {event['outcome']} {event['nbytes']} bytes "
                f"in {event['seconds']:.3f}s",
            )
        texts = [event["log_text"] for event in events]
        self.assertIn(f"files listening on 127.0.0.1:{server.port} (plain TCP)", texts)
        self.assertIn("Received SIGTERM, shutting down.", texts)
