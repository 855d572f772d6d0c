"""The shared options' checks before anything connects: values, server, --ca, and the login."""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.cli import build_parser
from tcpfiles.cli.common import EXIT_USAGE, Failed
from tcpfiles.cli.options import check_values, credentials, server_host


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


class CheckValuesTests(SynchronousTestCase):
    def refused(self, *argv: str) -> str:
        """check_values' one line for ``argv``; it exits 2 and connects nowhere."""
        reactor = MemoryReactor()
        with self.assertRaises(Failed) as caught:
            check_values(reactor, parse(*argv))
        self.assertEqual(caught.exception.status, EXIT_USAGE)
        self.assertEqual(reactor.tcpClients, [])
        return str(caught.exception)

    def test_good_values_pass(self) -> None:
        """Every command's defaults pass, without a connection."""
        reactor = MemoryReactor()
        for argv in (["get", "x"], ["get", "--oneshot", "x"], ["put", "f"], ["ls"], ["echo"]):
            check_values(reactor, parse(*argv))
        self.assertEqual(reactor.tcpClients, [])

    def test_seconds(self) -> None:
        """--timeout must be above 0 and finite, --retry-for 0 or more."""
        self.assertEqual(
            self.refused("get", "--timeout", "0", "x"),
            "--timeout 0: give a number of seconds above 0",
        )
        self.assertEqual(
            self.refused("ls", "--timeout", "nan"),
            "--timeout nan: give a number of seconds above 0",
        )
        self.assertEqual(
            self.refused("put", "--retry-for", "-1", "f"),
            "--retry-for -1: give a number of seconds, 0 or more",
        )
        check_values(MemoryReactor(), parse("get", "--retry-for", "0", "x"))

    def test_server(self) -> None:
        """A server that no endpoint can be made of is named with the reason."""
        self.assertEqual(
            self.refused("ls", "-s", ""),
            "--server '': the server is empty: give HOST[:PORT] or an endpoint string",
        )
        self.assertIn("--server 'h:99999': ", self.refused("chat", "-s", "h:99999"))

    def test_unreadable_ca(self) -> None:
        """A --ca that cannot be read is refused before OpenSSL sees it."""
        self.assertEqual(
            self.refused("get", "--ca", "/nonexistent/ca.pem", "x"),
            "--ca '/nonexistent/ca.pem': cannot read it",
        )

    def test_ca_not_pem(self) -> None:
        """A --ca that is not a PEM certificate is a usage error too."""
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as ca:
            ca.write("not a certificate\n")
            ca.flush()
            self.assertTrue(
                self.refused("ls", "--ca", ca.name).startswith(
                    f"--ca {ca.name!r}: not a PEM certificate ("
                )
            )


class ServerHostTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """The host netrc is asked about, for each form of --server."""
        self.assertEqual(server_host("example.org"), "example.org")
        self.assertEqual(server_host("example.org:8888"), "example.org")
        self.assertEqual(server_host("[::1]:8888"), "::1")
        self.assertEqual(server_host("tls:host=example.org:port=8888"), "example.org")
        self.assertEqual(server_host("tcp:example.org:8888"), "example.org")
        self.assertIsNone(server_host("tcp:8888"))
        self.assertIsNone(server_host("unix:/run/tcpfiles.sock"))


class CredentialsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != "TCPFILES_PASSWORD"})
        self.patch(sys, "stdin", io.StringIO())  # not a terminal: no prompt
        home = tempfile.mkdtemp()  # not trial's mktemp: under pytest it writes into the tree
        self.addCleanup(shutil.rmtree, home)
        self.netrc = os.path.join(home, "netrc")

    def login(self, *argv: str) -> tuple[str, str] | None:
        return credentials(parse("ls", "--netrc", self.netrc, *argv))

    def test_no_user(self) -> None:
        """Without --user there is nothing to log in with."""
        self.assertIsNone(self.login())

    def test_environment(self) -> None:
        """$TCPFILES_PASSWORD comes first."""
        os.environ["TCPFILES_PASSWORD"] = "secret"
        self.assertEqual(self.login("-u", "bob"), ("bob", "secret"))

    def test_netrc(self) -> None:
        """A netrc line for the server's host and the user gives the password."""
        with open(self.netrc, "w") as f:
            f.write("machine example.org login bob password hunter2\n")
        os.chmod(self.netrc, 0o600)
        self.assertEqual(self.login("-u", "bob", "-s", "example.org:8888"), ("bob", "hunter2"))

    def test_netrc_other_user(self) -> None:
        """A netrc line for another user is not used."""
        with open(self.netrc, "w") as f:
            f.write("machine example.org login ann password hunter2\n")
        os.chmod(self.netrc, 0o600)
        with self.assertRaises(Failed) as caught:
            self.login("-u", "bob", "-s", "example.org")
        self.assertEqual(caught.exception.status, EXIT_USAGE)

    def test_bad_netrc(self) -> None:
        """A netrc that cannot be parsed is a usage error naming the file."""
        with open(self.netrc, "w") as f:
            f.write("hi\n")
        with self.assertRaises(Failed) as caught:
            self.login("-u", "bob")
        self.assertEqual(caught.exception.status, EXIT_USAGE)
        self.assertTrue(str(caught.exception).startswith(f"--netrc {self.netrc}: "))

    def test_nowhere(self) -> None:
        """No environment, no netrc, no terminal: say where a password can come from."""
        with self.assertRaises(Failed) as caught:
            self.login("-u", "bob")
        self.assertEqual(caught.exception.status, EXIT_USAGE)
        self.assertIn("set TCPFILES_PASSWORD", str(caught.exception))
