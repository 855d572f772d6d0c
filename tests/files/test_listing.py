"""LIST streamed in bounded batches: the lister, the server's pacing and cap, client parsing."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.files import wire
from tcpfiles.files.client import FilesClient, FilesClientProtocol, Listing
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.tap import Options
from tcpfiles.testing import PausingTransport, connect
from tcpfiles.tree import listing as listing_module
from tcpfiles.tree.listing import SCAN_FACTOR, TEMP_PREFIX, ListingBusy
from tcpfiles.tree.paths import Exhausted, NotFound, Root
from tcpfiles.tree.store import FileStore


class TempDirs:
    """A fresh directory per call, removed after the test (trial's mktemp leaves them in cwd)."""

    def tmpdir(self: Any) -> str:
        path = tempfile.mkdtemp(prefix="tcpfiles-listing-")
        self.addCleanup(shutil.rmtree, path, True)
        return path


class Threads:
    """A fake ``defer_to_thread``: runs work at once, or holds it until :meth:`step`."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.calls = 0
        self.held: list[tuple[defer.Deferred[Any], Any, tuple[Any, ...]]] = []

    def __call__(self, f: Any, *args: Any) -> defer.Deferred[Any]:
        self.calls += 1
        if not self.hold:
            return defer.maybeDeferred(f, *args)
        d: defer.Deferred[Any] = defer.Deferred()
        self.held.append((d, f, args))
        return d

    def step(self) -> None:
        """Run the oldest held call (its callbacks run now, as the reactor would run them)."""
        d, f, args = self.held.pop(0)
        try:
            result = f(*args)
        except Exception as exc:  # noqa: BLE001 - handed to the Deferred like a thread would
            d.errback(exc)
        else:
            d.callback(result)


def make_tree(base: str, count: int, hidden: int = 0) -> Path:
    """A served root with ``big/`` holding ``count`` files (``hidden`` temporaries too)."""
    root = Path(base) / "files"
    (root / "big").mkdir(parents=True)
    for i in range(count):
        (root / "big" / f"f{i:03d}").write_bytes(b"x" * i)
    for i in range(hidden):
        (root / "big" / f"{TEMP_PREFIX}{i}").write_bytes(b"")
    return root


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def names_of(data: bytes) -> list[bytes]:
    """The names in the rows of a wire answer (between ``OK list`` and ``END``)."""
    rows = (line for line in data.splitlines() if line[:2] in (b"f ", b"d ", b"x "))
    return [row.split(b" ", 3)[3] for row in rows]


class ListerTests(TempDirs, SynchronousTestCase):
    """The store's batched reader."""

    def setUp(self) -> None:
        self.threads = Threads()

    def store(self, root: Path) -> FileStore:
        return FileStore(Root.at(str(root)), self.threads)

    def read_all(self, listing: Any, limit: int) -> list[Any]:
        batches = []
        while not batches or not batches[-1].end:
            batches.append(self.successResultOf(listing.read(limit)))
        return batches

    def test_batches_are_bounded_and_the_last_says_end(self) -> None:
        """10 entries read 4 at a time: 4, 4, 2; only the last says end; each one thread call."""
        root = make_tree(self.tmpdir(), 10)
        listing = self.store(root).open_listing("big")
        batches = self.read_all(listing, 4)
        self.assertEqual([len(b.rows) for b in batches], [4, 4, 2])
        self.assertEqual([b.end for b in batches], [False, False, True])
        self.assertEqual(self.threads.calls, 3)
        names = sorted(e.name for b in batches for e in b.rows)
        self.assertEqual(names, [f"f{i:03d}".encode() for i in range(10)])
        listing.close()

    def test_exact_multiple_ends_without_an_empty_batch(self) -> None:
        """8 entries read 4 at a time: the look-ahead makes the second batch the last one."""
        root = make_tree(self.tmpdir(), 8)
        listing = self.store(root).open_listing("big")
        self.assertEqual([b.end for b in self.read_all(listing, 4)], [False, True])
        listing.close()

    def test_hidden_entries_never_make_a_batch_unbounded(self) -> None:
        """A directory of temporaries is scanned at most SCAN_FACTOR * limit entries per call."""
        root = make_tree(self.tmpdir(), 1, hidden=50)
        listing = self.store(root).open_listing("big")
        batches = self.read_all(listing, 2)
        self.assertGreaterEqual(len(batches), 50 // (SCAN_FACTOR * 2))
        self.assertEqual(sum(len(b.rows) for b in batches), 1)
        listing.close()

    def test_render_runs_with_the_read(self) -> None:
        """The render function is applied in the thread call, one row per entry."""
        root = make_tree(self.tmpdir(), 3)
        listing = self.store(root).open_listing("big")
        batch = self.successResultOf(listing.read(10, lambda e: e.name.upper()))
        self.assertEqual(sorted(batch.rows), [b"F000", b"F001", b"F002"])
        listing.close()

    def test_one_read_at_a_time(self) -> None:
        """A second read while one is in the thread pool is a caller's bug, refused."""
        self.threads.hold = True
        listing = self.store(make_tree(self.tmpdir(), 3)).open_listing("big")
        listing.read(2)
        self.assertRaises(ListingBusy, listing.read, 2)
        self.threads.step()
        listing.close()

    def test_close_during_a_read_releases_after_it(self) -> None:
        """Closing while a batch is read keeps the directory open until that batch is done."""
        root = make_tree(self.tmpdir(), 3)
        store = self.store(root)
        store.root.fd()  # opened once and kept on purpose
        before = open_fds()
        self.threads.hold = True
        listing = store.open_listing("big")
        d = listing.read(2)
        listing.close()
        self.assertEqual(open_fds(), before + 2)  # the directory and scandir's duplicate
        self.threads.step()
        self.assertEqual(len(self.successResultOf(d).rows), 2)
        self.assertEqual(open_fds(), before)
        self.assertTrue(self.successResultOf(listing.read(2)).end)  # closed: nothing more

    def test_exhaustion_fails_the_batch_instead_of_hiding_entries(self) -> None:
        """Out of descriptors (or a busy PathError) while an entry is looked at fails the read:
        a listing never quietly leaves out an entry that exists."""
        root = make_tree(self.tmpdir(), 1)
        os.symlink("f000", root / "big" / "link")
        for error in (OSError(errno.EMFILE, "Too many open files"), Exhausted("out")):
            listing = self.store(root).open_listing("big")

            def exhausted(
                root: object, parts: tuple[str, ...], error: Exception = error
            ) -> os.stat_result:
                raise error

            self.patch(listing_module, "stat_beneath", exhausted)
            self.failureResultOf(listing.read(10), Exhausted)
            listing.close()

    def test_listing_is_confined(self) -> None:
        """A directory reached through a symlink leaving the root is not-found, like a read;
        a link inside the listed directory that leaves the root is not listed."""
        base = Path(self.tmpdir())
        root = make_tree(str(base), 1)
        outside = base / "outside"
        outside.mkdir()
        (outside / "secret").write_bytes(b"s")
        os.symlink(str(outside), root / "out")
        os.symlink(str(outside / "secret"), root / "big" / "leak")
        store = self.store(root)
        self.assertRaises(NotFound, store.open_listing, "out")
        self.assertRaises(NotFound, store.open_listing, f"big/{TEMP_PREFIX}x")
        listing = store.open_listing("big")
        names = [e.name for b in self.read_all(listing, 10) for e in b.rows]
        self.assertEqual(names, [b"f000"])
        listing.close()


class ServerListTests(TempDirs, SynchronousTestCase):
    """The files server streams LIST: paced, capped, one batch in flight."""

    def factory(self, root: Path, threads: Threads, **limits: Any) -> FileServerFactory:
        self.clock = task.Clock()
        store = FileStore(Root.at(str(root)), threads)
        return FileServerFactory(store, self.clock, Limits(**limits))

    def test_whole_or_byte_by_byte(self) -> None:
        """LIST then GET arriving whole or a byte at a time: the same answer, rows then END."""
        root = make_tree(self.tmpdir(), 7)
        answers = []
        for split in (False, True):
            protocol, transport = connect(self.factory(root, Threads(), list_batch=3))
            data = b"LIST big\nGET big/f002\n"
            for piece in [data[i : i + 1] for i in range(len(data))] if split else [data]:
                protocol.dataReceived(piece)
            answers.append(transport.value())
        self.assertEqual(answers[0], answers[1])
        lines = answers[0].splitlines()
        self.assertEqual(lines[0], b"OK list")
        self.assertEqual(sorted(names_of(answers[0])), [f"f{i:03d}".encode() for i in range(7)])
        self.assertEqual(lines[8:], [b"END 7", b"OK 2", b"xx"])

    def test_names_are_escaped_as_before(self) -> None:
        """Rows carry wire.escape_name of each name, plain names unchanged; names no request
        can carry (a newline, a backslash, bytes that are not UTF-8) are listed as ``x``."""
        root = Path(self.tmpdir()) / "files"
        root.mkdir(parents=True)
        listed = [b"plain name.txt", "\u202eevil".encode(), "zero\u200bwidth".encode()]
        unlisted = [b"x\nOK 0", b"back\\slash", b"latin-\xe9"]
        for name in listed + unlisted:
            with open(os.path.join(os.fsencode(root), name), "wb"):
                pass
        protocol, transport = connect(self.factory(root, Threads()))
        protocol.dataReceived(b"LIST\n")
        shown = sorted(names_of(transport.value()))
        everything = listed + unlisted
        self.assertEqual(shown, sorted(wire.escape_name(n).encode() for n in everything))
        self.assertIn(b"\\u202eevil", shown)
        self.assertIn(b"x\\u000aOK 0", shown)
        kinds = {row.split(b" ", 3)[3]: row[:1] for row in transport.value().split(b"\n")[1:-2]}
        self.assertEqual(kinds[b"back\\\\slash"], b"x")
        self.assertEqual(kinds[b"plain name.txt"], b"f")
        self.assertTrue(transport.value().endswith(b"END 6\n"))

    def test_cap_reached_ends_truncated_and_goes_on(self) -> None:
        """Past max_list the listing ends 'END <n> truncated', is logged so, and the next
        request is answered."""
        root = make_tree(self.tmpdir(), 10)
        protocol, transport = connect(self.factory(root, Threads(), max_list=4, list_batch=3))
        with capturedLogs() as events:
            protocol.dataReceived(b"LIST big\nGET big/f001\n")
        lines = transport.value().splitlines()
        self.assertEqual(len(names_of(transport.value())), 4)
        self.assertEqual(lines[5:], [b"END 4 truncated", b"OK 1", b"x"])
        text = [formatEvent(e) for e in events]
        self.assertTrue(any("LIST big -> OK truncated at 4 entries" in t for t in text), text)

    def test_exactly_the_cap_is_complete(self) -> None:
        """A directory of exactly max_list entries (plus hidden ones) is a whole listing."""
        root = make_tree(self.tmpdir(), 4, hidden=30)
        protocol, transport = connect(self.factory(root, Threads(), max_list=4, list_batch=4))
        protocol.dataReceived(b"LIST big\n")
        self.assertTrue(transport.value().endswith(b"END 4\n"), transport.value()[-40:])

    def test_one_batch_in_flight_per_connection(self) -> None:
        """Only one batch is in the thread pool for a connection; the next after it is sent."""
        threads = Threads(hold=True)
        root = make_tree(self.tmpdir(), 10)
        protocol, transport = connect(self.factory(root, threads, list_batch=3))
        protocol.dataReceived(b"LIST big\n")
        sizes = []
        while threads.held:
            self.assertEqual(len(threads.held), 1)
            before = len(transport.value())
            threads.step()
            sizes.append(len(names_of(transport.value()[before:])))
        self.assertEqual(sizes, [3, 3, 3, 1])
        self.assertTrue(transport.value().endswith(b"END 10\n"))

    def test_batches_in_flight_are_bounded_in_total(self) -> None:
        """Two connections listing at once share max_list_reads = 1: one read in the pool."""
        threads = Threads(hold=True)
        root = make_tree(self.tmpdir(), 6)
        factory = self.factory(root, threads, list_batch=2, max_list_reads=1)
        one, one_t = connect(factory, port=1)
        two, two_t = connect(factory, port=2)
        one.dataReceived(b"LIST big\n")
        two.dataReceived(b"LIST big\n")
        steps = 0
        while threads.held:
            self.assertEqual(len(threads.held), 1)
            threads.step()
            steps += 1
        self.assertEqual(steps, 6)
        self.assertTrue(one_t.value().endswith(b"END 6\n"))
        self.assertTrue(two_t.value().endswith(b"END 6\n"))

    def test_a_client_that_stops_reading_gets_no_more_batches(self) -> None:
        """While the transport holds more than its limit, no batch is read; when it drains,
        the listing goes on; the connection never holds more than a batch beyond the limit."""
        threads = Threads()
        root = make_tree(self.tmpdir(), 40)
        protocol = self.factory(root, threads, list_batch=5).buildProtocol(
            IPv4Address("TCP", "192.0.2.7", 1)
        )
        transport = PausingTransport(limit=100)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"LIST big\n")
        rows = 0
        for _ in range(40):
            calls = threads.calls
            held = transport.value()
            self.assertLess(len(held.splitlines()), 1 + 5 + 1 + 5)  # limit ~3 rows, + a batch
            self.assertEqual(threads.calls, calls)  # nothing read while it waits
            rows += len(names_of(held))
            if held.endswith(b"END 40\n"):
                break
            transport.drain()
            self.assertEqual(threads.calls, calls + 1)
        self.assertEqual(rows, 40)

    def test_non_reader_is_dropped_after_the_stall_timeout(self) -> None:
        """A listing waiting on a client that never reads is aborted after stall_timeout."""
        root = make_tree(self.tmpdir(), 40)
        protocol = self.factory(root, Threads(), list_batch=5, stall_timeout=60).buildProtocol(
            IPv4Address("TCP", "192.0.2.7", 1)
        )
        transport = PausingTransport(limit=100)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"LIST big\n")
        self.clock.advance(59)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(transport.disconnecting)

    def test_connection_lost_mid_batch_releases_the_directory(self) -> None:
        """Lost while a batch is in the pool: nothing more is read, no descriptor is left."""
        threads = Threads(hold=True)
        root = make_tree(self.tmpdir(), 10)
        factory = self.factory(root, threads, list_batch=3)
        factory.store.root.fd()  # type: ignore[attr-defined]
        before = open_fds()
        protocol, transport = connect(factory)
        protocol.dataReceived(b"LIST big\n")
        threads.step()
        self.assertEqual(len(threads.held), 1)
        protocol.connectionLost()
        threads.step()
        self.assertEqual(threads.held, [])
        self.assertEqual(open_fds(), before)

    def test_errors_before_the_listing_are_err_lines(self) -> None:
        """A missing directory or a file is an ERR, as before; nothing is read."""
        threads = Threads()
        root = make_tree(self.tmpdir(), 1)
        protocol, transport = connect(self.factory(root, threads))
        protocol.dataReceived(b"LIST nope\nLIST big/f000\n")
        self.assertEqual(
            transport.value(),
            b"ERR not-found no such file or directory: nope\n"
            b"ERR not-a-directory not a directory: big/f000\n",
        )
        self.assertEqual(threads.calls, 0)

    def test_read_error_ends_the_listing_failed(self) -> None:
        """A directory that cannot be read on ends with 'END <n> failed', logged; the
        connection goes on."""
        threads = Threads()
        root = make_tree(self.tmpdir(), 3)
        protocol, transport = connect(self.factory(root, threads))

        def broken(f: Any, *args: Any) -> defer.Deferred[Any]:
            return defer.fail(OSError(5, "Input/output error"))

        protocol.factory.store._defer_to_thread = broken  # type: ignore[attr-defined]
        with capturedLogs() as events:
            protocol.dataReceived(b"LIST big\nGET big/f001\n")
        self.assertEqual(transport.value(), b"OK list\nEND 0 failed\nOK 1\nx")
        self.assertTrue(any(e.get("log_failure") for e in events))
        self.flushLoggedErrors(OSError)

    def test_exhaustion_ends_the_listing_failed_without_a_traceback(self) -> None:
        """Out of descriptors mid-listing: 'END <n> failed', one warning, no traceback."""
        root = make_tree(self.tmpdir(), 3)
        protocol, transport = connect(self.factory(root, Threads()))

        def exhausted(f: Any, *args: Any) -> defer.Deferred[Any]:
            return defer.fail(OSError(errno.EMFILE, "Too many open files"))

        protocol.factory.store._defer_to_thread = exhausted  # type: ignore[attr-defined]
        with capturedLogs() as events:
            protocol.dataReceived(b"LIST big\n")
        self.assertEqual(transport.value(), b"OK list\nEND 0 failed\n")
        self.assertFalse(any(e.get("log_failure") for e in events))
        text = [formatEvent(e) for e in events]
        self.assertTrue(any("listing stopped: the server is out of resources" in t for t in text))


class CodecListTests(SynchronousTestCase):
    """LIST rows and the END line."""

    def test_rows_escape_exactly_like_escape_name(self) -> None:
        """The fast path for plain names gives what escape_name gives."""
        for name in (b"a.txt", b"with space", b"back\\slash", b"\x7f", b"caf\xc3\xa9", b"\xff"):
            row = wire.list_row("f", 1, 0, name)
            self.assertEqual(row, f"f 1 1970-01-01T00:00:00Z {wire.escape_name(name)}\n".encode())

    def test_end_lines(self) -> None:
        """END <n> and END <n> <reason> round-trip; rows are not END lines; bad ones raise."""
        self.assertEqual(wire.list_end(3), b"END 3\n")
        self.assertEqual(wire.list_end(3, "truncated"), b"END 3 truncated\n")
        self.assertRaises(ValueError, wire.list_end, 3, "bogus")
        self.assertEqual(wire.parse_list_end(b"END 3"), (3, None))
        self.assertEqual(wire.parse_list_end(b"END 3 truncated"), (3, "truncated"))
        self.assertEqual(wire.parse_list_end(b"END 0 failed"), (0, "failed"))
        self.assertIsNone(wire.parse_list_end(b"f 1 1970-01-01T00:00:00Z END"))
        for bad in (b"END", b"END x", b"END 3 maybe", b"ENDING 3", b"END 3 truncated x"):
            self.assertRaises(wire.ProtocolError, wire.parse_list_end, bad)

    def test_help_describes_the_streamed_listing(self) -> None:
        """HELP says what LIST answers now."""
        self.assertIn(
            "OK list, lines <type> <size> <mtime> <name>, then END <n>", wire.HELP_LINES[2]
        )


class ClientListTests(SynchronousTestCase):
    """FilesClient.list reads rows up to END, sorts them, and tells a truncated listing."""

    ROWS = b"f 2 2026-01-01T00:00:00Z b\nd - 2026-01-01T00:00:00Z a\n"

    def listing(self, answer: bytes, byte_by_byte: bool = False) -> Any:
        protocol = FilesClientProtocol()
        protocol.makeConnection(StringTransport())
        d = FilesClient(protocol).list("dir")
        self.assertEqual(protocol.transport.value(), b"LIST dir\n")
        pieces = [answer[i : i + 1] for i in range(len(answer))] if byte_by_byte else [answer]
        for piece in pieces:
            protocol.dataReceived(piece)
        return d

    def test_complete_listing_whole_or_byte_by_byte(self) -> None:
        """OK list, rows, END 2: a complete Listing sorted by name, whichever way it arrives."""
        for split in (False, True):
            result = self.successResultOf(
                self.listing(b"OK list\n" + self.ROWS + b"END 2\n", split)
            )
            self.assertIsInstance(result, Listing)
            self.assertTrue(result.complete)
            self.assertEqual([(e.kind, e.name) for e in result], [("dir", "a"), ("file", "b")])

    def test_truncated_listing_is_marked(self) -> None:
        """END 2 truncated: the entries, with complete False and the reason."""
        result = self.successResultOf(self.listing(b"OK list\n" + self.ROWS + b"END 2 truncated\n"))
        self.assertFalse(result.complete)
        self.assertEqual((len(result), result.reason), (2, "truncated"))

    def test_wrong_count_is_a_protocol_error(self) -> None:
        """An END whose count is not the rows received fails the request and the connection."""
        failure = self.failureResultOf(self.listing(b"OK list\n" + self.ROWS + b"END 3\n"))
        self.assertIn("END 3 after 2 rows", str(failure.value))

    def test_older_server_answer_is_still_read(self) -> None:
        """A server of the previous protocol answers OK <n> and n rows: a complete listing."""
        result = self.successResultOf(self.listing(b"OK 2\n" + self.ROWS))
        self.assertTrue(result.complete)
        self.assertEqual(len(result), 2)


class OptionTests(TempDirs, SynchronousTestCase):
    """--max-list reaches the server's Limits."""

    def test_max_list_option(self) -> None:
        """Default 100,000; --max-list N sets it; 0 is refused."""
        base = self.tmpdir()
        options = Options()
        options.parseOptions(["--root", base])
        self.assertEqual(options["serving"]["files"][1].limits().max_list, 100_000)
        options = Options()
        options.parseOptions(["--root", base, "--max-list", "5"])
        self.assertEqual(options["serving"]["files"][1].limits().max_list, 5)
        from twisted.python import usage

        self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--root", base, "--max-list", "0"]
        )
