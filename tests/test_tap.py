"""twistd options and the service they build, without binding anything."""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.plugin import IPlugin
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tcpfiles import tap
from tcpfiles.core.plugin import Context
from tcpfiles.core.service import DrainingService, with_backlog
from tcpfiles.testing import pump
from tests.helpers import cases, temporary_directory, with_cases


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(args))
    return options


@with_cases
class OptionsTests(SynchronousTestCase):
    """twistd options and the service they build, without binding anything."""

    def setUp(self) -> None:
        self.tmp_path = temporary_directory(self)

    def test_plugin_object_provides_the_interfaces(self) -> None:
        """The twisted/plugins module exposes an IServiceMaker plugin named tcpfiles."""
        from twisted.plugins.tcpfiles_plugin import tcpfiles

        assert verifyObject(IServiceMaker, tcpfiles) and verifyObject(IPlugin, tcpfiles)
        assert tcpfiles.tapname == "tcpfiles"

    def test_defaults(self) -> None:
        """Only --root is needed; files listen on tcp:8888 with backlog 511, documented limits."""
        options = parse("--root", str(self.tmp_path))
        assert options["listen"] == ["tcp:8888"]
        limits = options["serving"]["files"][1].limits()  # files' own options
        assert (
            limits.max_line,
            limits.line_timeout,
            limits.idle_timeout,
            limits.stall_timeout,
            limits.max_per_peer,
            limits.max_connections,
        ) == (8192, 30, 300, 60, 64, 1024)
        assert options["grace"] == 30.0

    @cases(
        no_root=((), "--root DIR is required"),
        nonexistent_root=(("--root", "/nonexistent/x"), "does not exist or is not a directory"),
        root_is_a_file=(("--root", "/etc/passwd"), "does not exist or is not a directory"),
        negative_grace=(("--root", ".", "--grace", "-1"), "must be positive"),
        bad_max_per_peer=(("--root", ".", "--max-per-peer", "x"), "invalid literal"),
        bad_listen=(("--root", ".", "--listen", "bogus:1"), "--listen 'bogus:1'"),
    )
    def test_usage_errors(self, args, message) -> None:
        """Bad options are usage errors with a message that says what is wrong."""
        with self.assertRaisesRegex(usage.UsageError, message):
            parse(*args)

    def test_make_service_listens_only_when_started(self) -> None:
        """makeService opens nothing; starting binds every --listen with a 511 backlog."""
        reactor = MemoryReactorClock()
        options = parse(
            "--root",
            str(self.tmp_path),
            "--listen",
            "tcp:1234:interface=127.0.0.1",
            "-l",
            "tcp:1235:backlog=5",
        )
        service = tap.makeService(options, reactor=reactor)
        assert isinstance(service, DrainingService)
        assert reactor.tcpServers == []
        service.privilegedStartService()
        service.startService()
        assert [
            (port, backlog, interface) for port, _, backlog, interface in reactor.tcpServers
        ] == [
            (1234, 511, "127.0.0.1"),
            (1235, 5, ""),
        ]
        service.stopService()

    def test_with_backlog(self) -> None:
        """Only TCP-like endpoints without their own backlog get ours."""
        assert with_backlog("tcp:80") == "tcp:80:backlog=511"
        assert with_backlog("tcp:80:backlog=9") == "tcp:80:backlog=9"
        assert with_backlog("unix:/x.sock") == "unix:/x.sock"

    def test_tls_shortcut_turns_default_endpoints_into_ssl(self) -> None:
        """--tls-cert/--tls-key make the default endpoints ssl:; explicit ones stay as given."""
        from tests.e2e.certs import make_ca, make_server_cert

        tmp_path = self.tmp_path
        pair = make_server_cert(tmp_path, make_ca(tmp_path))
        tls = ["--tls-cert", str(pair.cert), "--tls-key", str(pair.key)]
        options = parse(
            "--root",
            str(tmp_path),
            *tls,
            "--serve",
            "chat",
            "--serve",
            "echo=tcp:7000",
            "--serve",
            "udp-echo",
        )
        assert options["listen"][0].startswith("ssl:8888:certKey=")
        assert options["serving"]["chat"][2][0].startswith("ssl:9000:certKey=")
        assert options["serving"]["echo"][2] == ["tcp:7000"]
        assert options["serving"]["udp-echo"][2] == ["udp:7777"]
        with self.assertRaisesRegex(usage.UsageError, "go together"):
            parse("--root", str(tmp_path), "--tls-cert", str(pair.cert))
        (tmp_path / "junk.pem").write_text("not a certificate")
        with self.assertRaisesRegex(usage.UsageError, "--tls-cert/--tls-key: "):
            parse(
                "--root",
                str(tmp_path),
                "--tls-cert",
                str(tmp_path / "junk.pem"),
                "--tls-key",
                str(pair.key),
            )

    def test_account_options(self) -> None:
        """--auth takes strcred strings; --users and --anonymous need it; a bad users file fails."""
        tmp_path = self.tmp_path
        options = parse("--root", str(tmp_path), "--auth", "memory:alice:pw", "--anonymous")
        assert len(options["credCheckers"]) == 1 and options["anonymous"]
        with self.assertRaisesRegex(usage.UsageError, "--anonymous needs --auth"):
            parse("--root", str(tmp_path), "--anonymous")
        (tmp_path / "users").write_text("alice nowhere rw\n")
        with self.assertRaisesRegex(usage.UsageError, "--users: .*is not a directory"):
            parse(
                "--root",
                str(tmp_path),
                "--auth",
                "memory:alice:pw",
                "--users",
                str(tmp_path / "users"),
            )


class HelpTests(SynchronousTestCase):
    """``twistd tcpfiles --help`` says what every option accepts, prefixed ones included."""

    def test_a_prefixed_option_names_what_its_coercer_accepts(self) -> None:
        text = " ".join(tap.Options().getUsage(width=1000).split())
        self.assertIn(
            "--chat-max-per-peer= [chat] Connections from one address at once. "
            "[default: 64]. A positive whole number.",
            text,
        )
        self.assertIn("[udp-echo]", text)


class Spy:
    """A third-party behaviour that records the Context it is built with (no logs_in)."""

    name = "spy"

    def __init__(self, **declared: bool) -> None:
        self.__dict__.update(declared)
        self.contexts: list[Context] = []

    def build(self, options: usage.Options, context: Context) -> object:
        self.contexts.append(context)
        return object()


class BehavioursUnderAuthTests(SynchronousTestCase):
    """Under --auth a behaviour that does not log users in sees only the anonymous view."""

    def setUp(self) -> None:
        self.root = str(temporary_directory(self))
        os.mkdir(os.path.join(self.root, "alice"))
        for name, body in (("notes.txt", b"hello\n"), ("alice/secret.txt", b"alice's\n")):
            with open(os.path.join(self.root, name), "wb") as f:
                f.write(body)

    def serve(self, *args: str, spies: tuple[Spy, ...] = ()) -> tuple[Any, MemoryReactorClock]:
        """makeService with oneshot on two ports and echo on one, plus ``spies``; started."""
        options = parse(
            "--root",
            self.root,
            *args,
            "--serve",
            "oneshot=tcp:1300:interface=127.0.0.1",
            "--serve",
            "oneshot=tcp:1301:interface=127.0.0.1",
            "--serve",
            "echo=tcp:1302:interface=127.0.0.1",
        )
        for spy in spies:
            options["serving"][spy.name] = (spy, usage.Options(), [])
        reactor = MemoryReactorClock()
        with capturedLogs() as self.built_events:
            service = tap.makeService(options, reactor=reactor)
        with capturedLogs() as self.start_events:
            service.privilegedStartService()
            service.startService()
        self.addCleanup(service.stopService)
        return service, reactor

    def oneshot_answer(self, reactor: MemoryReactorClock, port: int, request: bytes) -> bytes:
        factory = next(f for p, f, _, _ in reactor.tcpServers if p == port)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        for byte in request:  # byte by byte, as a slow client would
            protocol.dataReceived(bytes([byte]))
        pump(transport)
        self.assertTrue(transport.disconnecting)
        return transport.value()

    def warnings(self) -> list[str]:
        return [
            formatEvent(event) for event in self.start_events if event["log_level"] == LogLevel.warn
        ]

    def test_no_anonymous_oneshot_starts_refuses_everything_and_warns_once(self) -> None:
        """--auth without --anonymous: oneshot answers 1 even to alice's file; one warning."""
        _, reactor = self.serve("--auth", "memory:alice:pw")
        for port in (1300, 1301):
            self.assertEqual(self.oneshot_answer(reactor, port, b"alice/secret.txt\n"), b"1")
            self.assertEqual(self.oneshot_answer(reactor, port, b"notes.txt\n"), b"1")
        [warning] = self.warnings()
        self.assertIn("oneshot does not log users in", warning)
        self.assertIn("without --anonymous", warning)
        self.assertNotIn("echo", warning)
        self.assertEqual(
            [e for e in self.built_events if e["log_level"] == LogLevel.warn], []
        )  # said when the server starts, not when it is configured

    def test_anonymous_oneshot_serves_the_anonymous_view_read_only(self) -> None:
        """--auth --anonymous --writable: oneshot serves --root as anonymous sees it, no warning."""
        spy = Spy()
        _, reactor = self.serve("--auth", "memory:alice:pw", "--anonymous", "-w", spies=(spy,))
        self.assertEqual(self.oneshot_answer(reactor, 1300, b"notes.txt\n"), b"hello\n")
        self.assertEqual(self.warnings(), [])
        [context] = spy.contexts
        self.assertEqual(context.root.real, os.path.realpath(self.root))
        self.assertFalse(context.writable)
        self.assertIsNotNone(context.portal)  # it may still log users in; it just is not trusted

    def test_behaviour_that_logs_in_gets_the_whole_server(self) -> None:
        """logs_in=True: the root, the portal, the limiter and --writable, as before."""
        spy = Spy(logs_in=True, uses_root=True)
        spy.name = "spy-in"
        self.serve("--auth", "memory:alice:pw", "-w", spies=(spy,))
        [context] = spy.contexts
        self.assertEqual(context.root.real, os.path.realpath(self.root))
        self.assertTrue(context.writable)
        self.assertIsNotNone(context.portal)
        self.assertIsNotNone(context.limiter)
        self.assertEqual(len(self.warnings()), 1)  # oneshot's; none for the spy

    def test_undeclared_third_party_gets_nothing_and_no_warning(self) -> None:
        """A plugin without logs_in/uses_root is blind without --anonymous, silently."""
        spy = Spy()
        self.serve("--auth", "memory:alice:pw", spies=(spy,))
        [context] = spy.contexts
        self.assertIsNone(context.root)
        self.assertFalse(context.writable)
        self.assertEqual(len(self.warnings()), 1)  # oneshot's only

    def test_without_auth_every_behaviour_gets_the_root(self) -> None:
        """No --auth: the root (writable as --writable says) for everyone; no warning."""
        spy = Spy()
        _, reactor = self.serve("-w", spies=(spy,))
        self.assertEqual(self.oneshot_answer(reactor, 1301, b"alice/secret.txt\r\n"), b"alice's\n")
        [context] = spy.contexts
        self.assertEqual(context.root.real, os.path.realpath(self.root))
        self.assertTrue(context.writable)
        self.assertIsNone(context.portal)
        self.assertEqual(self.warnings(), [])

    def test_chat_declares_that_it_logs_in(self) -> None:
        """The built-ins' declarations: chat logs in; oneshot serves the root and does not."""
        chat, oneshot, echo = (tap.BEHAVIOURS[n] for n in ("chat", "oneshot", "echo"))
        self.assertEqual((chat.logs_in, chat.uses_root), (True, False))
        self.assertEqual((oneshot.logs_in, oneshot.uses_root), (False, True))
        self.assertEqual((echo.logs_in, echo.uses_root), (False, False))
