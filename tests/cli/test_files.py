"""get, put and ls without a server: plans, failures sorted into exit statuses, the ls table."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import sys
import tempfile
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.cli import build_parser
from tcpfiles.cli.common import (
    EXIT_CONNECTION,
    EXIT_LOCAL,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    Failed,
)
from tcpfiles.cli.files import plan_get, plan_put
from tcpfiles.cli.ls import human_size, list_directory
from tcpfiles.cli.session import Outcome
from tcpfiles.files.client import (
    ConnectionClosed,
    IntegrityError,
    Listing,
    RemoteEntry,
    RemoteError,
)
from tcpfiles.files.transfer import TreeResult


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


class PlanTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()  # not trial's mktemp: under pytest it writes into the tree
        self.addCleanup(shutil.rmtree, self.dir)
        os.mkdir(os.path.join(self.dir, "tree"))
        self.file = os.path.join(self.dir, "notes.txt")
        with open(self.file, "w") as f:
            f.write("hello\n")

    def refused(self, planner: Any, *argv: str) -> Failed:
        with self.assertRaises(Failed) as caught:
            planner(parse(*argv))
        return caught.exception

    def test_get_into_a_directory(self) -> None:
        """Into a directory, each REMOTE keeps its last name ("a/b/" is b)."""
        self.assertEqual(
            plan_get(parse("get", "-o", self.dir, "x/one", "two/")),
            [("x/one", os.path.join(self.dir, "one")), ("two/", os.path.join(self.dir, "two"))],
        )

    def test_get_to_a_file(self) -> None:
        """One REMOTE and a DEST that is not a directory: DEST is the file to write."""
        dest = os.path.join(self.dir, "copy")
        self.assertEqual(plan_get(parse("get", "-o", dest, "a/b")), [("a/b", dest)])

    def test_get_refusals(self) -> None:
        """Several files need a directory; a file needs its parent; "/" names no file."""
        dest = os.path.join(self.dir, "copy")
        several = self.refused(plan_get, "get", "-o", dest, "a", "b")
        self.assertEqual(several.status, EXIT_USAGE)
        self.assertEqual(
            str(several), f"-o {dest!r}: with several files, DEST must be an existing directory"
        )
        nowhere = self.refused(plan_get, "get", "-o", os.path.join(dest, "x"), "a")
        self.assertEqual(nowhere.status, EXIT_LOCAL)
        self.assertEqual(str(nowhere), f"cannot write {dest}/x: no such directory {dest}")
        root = self.refused(plan_get, "get", "-o", self.dir, "/")
        self.assertEqual((root.status, str(root)), (EXIT_USAGE, "'/' does not name a file"))

    def test_put_names(self) -> None:
        """put: its own name at the root, a REMOTE ending in / is a directory to put it in."""
        self.assertEqual(plan_put(parse("put", self.file)), (self.file, "notes.txt"))
        self.assertEqual(plan_put(parse("put", self.file, "d/")), (self.file, "d/notes.txt"))
        self.assertEqual(plan_put(parse("put", self.file, "d/n")), (self.file, "d/n"))

    def test_put_refusals(self) -> None:
        """A missing LOCAL is a local problem; a directory without -r, a file with -r, usage."""
        missing = os.path.join(self.dir, "missing")
        gone = self.refused(plan_put, "put", missing)
        self.assertEqual(
            (gone.status, str(gone)),
            (EXIT_LOCAL, f"cannot use {missing}: No such file or directory"),
        )
        tree = os.path.join(self.dir, "tree")
        self.assertEqual(self.refused(plan_put, "put", tree).status, EXIT_USAGE)
        self.assertEqual(self.refused(plan_put, "put", "-r", self.file).status, EXIT_USAGE)
        self.assertEqual(plan_put(parse("put", "-r", tree)), (tree, "tree"))


class OutcomeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.err = io.StringIO()
        self.patch(sys, "stderr", self.err)

    def test_first_failure_kind_wins(self) -> None:
        """Every failure is reported; the status is the first one's."""
        outcome = Outcome()
        self.assertEqual(outcome.status, EXIT_OK)
        outcome.failed("a", IntegrityError("sha256 differs"))
        outcome.failed("b", RemoteError("missing", "no such file"))
        self.assertEqual(outcome.status, EXIT_LOCAL)
        self.assertEqual(
            self.err.getvalue(),
            "tcpfiles: a: sha256 differs\ntcpfiles: b: no such file (missing)\n",
        )

    def test_refusals(self) -> None:
        """ERR exists says --overwrite; a server with accounts says --user."""
        outcome = Outcome()
        outcome.failed("f", RemoteError("exists", "f exists"))
        outcome.failed("g", RemoteError("unauthorized", "log in first"))
        self.assertEqual(outcome.status, EXIT_REFUSED)
        self.assertEqual(
            self.err.getvalue(),
            "tcpfiles: f: already on the server (--overwrite replaces it)\n"
            "tcpfiles: g: the server has accounts: log in with --user NAME (unauthorized)\n",
        )

    def test_local_problem(self) -> None:
        """A local error names the local path, else what was being transferred."""
        outcome = Outcome()
        outcome.failed("x", OSError(errno.EACCES, "Permission denied", "/tmp/dest"))
        outcome.failed("y", OSError(errno.ENOSPC, "No space left on device"))
        self.assertEqual(outcome.status, EXIT_LOCAL)
        self.assertEqual(
            self.err.getvalue(),
            "tcpfiles: cannot use /tmp/dest: Permission denied\n"
            "tcpfiles: cannot use y: No space left on device\n",
        )

    def test_lost_connection_ends_the_command(self) -> None:
        """A connection that stayed lost ends the whole command with exit 3."""
        with self.assertRaises(Failed) as caught:
            Outcome().failed("f", ConnectionClosed("connection lost"))
        self.assertEqual(caught.exception.status, EXIT_CONNECTION)
        self.assertEqual(str(caught.exception), "gave up: the server stayed unreachable")
        self.assertEqual(self.err.getvalue(), "tcpfiles: f: connection lost\n")

    def test_unexpected_is_raised(self) -> None:
        """An error of no known kind is not hidden."""
        with self.assertRaises(KeyError):
            Outcome().failed("f", KeyError("bug"))

    def test_tree(self) -> None:
        """A tree transfer's skipped names and failures are each reported."""
        outcome = Outcome()
        outcome.tree(TreeResult(skipped=["dev"], failed=[("t/a", IntegrityError("short"))]))
        self.assertEqual(outcome.status, EXIT_LOCAL)
        self.assertEqual(
            self.err.getvalue(),
            "tcpfiles: skipped dev: not a regular file, or a name that cannot be used here\n"
            "tcpfiles: t/a: short\n",
        )


class FakeClient:
    """A FilesClient whose list() answers at once with a listing or an error."""

    def __init__(self, listing: Any) -> None:
        self.listing = listing
        self.asked: list[str] = []

    def list(self, path: str) -> Any:
        self.asked.append(path)
        if isinstance(self.listing, Exception):
            return defer.fail(self.listing)
        return defer.succeed(self.listing)


class FakeSession:
    """A Session that runs the operation once, on the fake client, not retried."""

    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def run(self, operation: Any) -> Any:
        return operation(self.client, False)


class LsTests(SynchronousTestCase):
    def ls(self, listing: Any, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        client = FakeClient(listing)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = self.successResultOf(list_directory(FakeSession(client), parse("ls", *argv)))
        self.assertEqual(client.asked, [argv[0] if argv else ""])
        return status, out.getvalue(), err.getvalue()

    def test_table(self) -> None:
        """Size (right-aligned, human), UTC minute, name with / for directories."""
        listing = Listing(
            [
                RemoteEntry("file", 1536, "2024-05-01T12:34:56Z", "b.bin"),
                RemoteEntry("dir", None, "2024-05-02T00:00:00Z", "a"),
                RemoteEntry("unrequestable", 3, "2024-05-03T00:00:00Z", "c\n"),
            ]
        )
        status, out, err = self.ls(listing, "dir")
        self.assertEqual((status, err), (EXIT_OK, ""))
        self.assertEqual(
            out.splitlines(),
            [
                "      -  2024-05-02 00:00  a/",
                "1.5 KiB  2024-05-01 12:34  b.bin",
                "    3 B  2024-05-03 00:00  c\\u000a  (its name cannot be requested)",
            ],
        )

    def test_incomplete(self) -> None:
        """A listing the server ended early is shown, then said to be incomplete: exit 1."""
        listing = Listing([RemoteEntry("file", 1, "2024-05-01T00:00:00Z", "a")], "truncated")
        status, out, err = self.ls(listing)
        self.assertEqual(status, EXIT_REFUSED)
        self.assertEqual(out, "1 B  2024-05-01 00:00  a\n")
        self.assertTrue(err.startswith("tcpfiles: listing of / stopped after 1 entries: "))
        self.assertTrue(err.endswith(" (truncated); not every entry is shown\n"))

    def test_refused(self) -> None:
        """An ERR is one line on stderr, exit 1; a lost connection exit 3."""
        status, out, err = self.ls(RemoteError("missing", "no such directory"), "nope")
        self.assertEqual((status, out), (EXIT_REFUSED, ""))
        self.assertEqual(err, "tcpfiles: nope: no such directory (missing)\n")
        status, _, err = self.ls(ConnectionClosed("connection lost"))
        self.assertEqual((status, err), (EXIT_CONNECTION, "tcpfiles: connection lost\n"))


class HumanSizeTests(SynchronousTestCase):
    def test_units(self) -> None:
        """Bytes exactly, then one decimal in binary units up to TiB."""
        self.assertEqual(human_size(0), "0 B")
        self.assertEqual(human_size(1023), "1023 B")
        self.assertEqual(human_size(1536), "1.5 KiB")
        self.assertEqual(human_size(5 << 20), "5.0 MiB")
        self.assertEqual(human_size(3 << 50), "3072.0 TiB")
