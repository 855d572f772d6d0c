"""The behaviour plugin point: discovery, --serve, per-behaviour options, the built service."""

from __future__ import annotations

from unittest import mock

from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import IPlugin
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tcpfiles import tap
from tcpfiles.core.interfaces import IBehaviour
from tcpfiles.core.plugin import Behaviour, discover, is_datagram
from tests.helpers import cases, temporary_directory, with_cases


def parse(root, *args):
    options = tap.Options()
    options.parseOptions(["--root", str(root), *args])
    return options


class MemoryReactorWithUDP(MemoryReactorClock):
    """MemoryReactorClock has no UDP: record listenUDP calls too."""

    def __init__(self):
        super().__init__()
        self.udpServers = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.udpServers.append((port, protocol, interface, maxPacketSize))
        listening = mock.Mock()
        listening.getHost.return_value = mock.Mock(host=interface or "0.0.0.0", port=port)
        return listening


@with_cases
class DiscoveryTests(SynchronousTestCase):
    """Discovery, --serve, per-behaviour options and the built service."""

    def setUp(self) -> None:
        self.tmp_path = temporary_directory(self)

    def test_builtins_are_found_as_plugins(self) -> None:
        """Every built-in behaviour is found by getPlugins and provides the interfaces."""
        found = discover()
        assert {"chat", "echo", "oneshot", "udp-echo", "upper"} <= set(found)
        for behaviour in found.values():
            assert verifyObject(IBehaviour, behaviour) and verifyObject(IPlugin, behaviour)
        assert found["echo"].default_endpoint == "tcp:7777"
        assert found["udp-echo"].default_endpoint == "udp:7777"

    def test_serve_with_defaults_and_explicit_endpoints(self) -> None:
        """--serve NAME uses the default endpoint; NAME=ENDPOINT overrides; repeats add
        endpoints."""
        options = parse(
            self.tmp_path,
            "--serve",
            "chat",
            "--serve",
            "echo=tcp:1:interface=127.0.0.1",
            "-s",
            "echo=unix:/tmp/e.sock",
            "--serve",
            "udp-echo",
        )
        serving = options["serving"]
        assert serving["chat"][2] == ["tcp:9000"]
        assert serving["echo"][2] == ["tcp:1:interface=127.0.0.1", "unix:/tmp/e.sock"]
        assert serving["udp-echo"][2] == ["udp:7777"]

    def test_behaviour_options_are_parsed_by_the_behaviour(self) -> None:
        """--chat-history reaches chat's own Options, coerced; defaults stay where not given."""
        options = parse(self.tmp_path, "--serve", "chat", "--chat-history", "5")
        chat_options = options["serving"]["chat"][1]
        assert chat_options["history"] == 5 and chat_options["max-line"] == 4096

    @cases(
        unknown_name=(
            ("--serve", "nope"),
            r"no such behaviour \(known: chat, echo, oneshot, udp-echo, upper\)",
        ),
        stream_on_udp=(("--serve", "chat=udp:9000"), "chat is a stream behaviour"),
        datagram_on_tcp=(("--serve", "udp-echo=tcp:7777"), "udp-echo is a datagram behaviour"),
        bad_endpoint=(("--serve", "echo=bogus:1"), "--serve echo=bogus:1"),
        options_but_not_served=(
            ("--chat-history", "5"),
            "--chat-history is given but chat is not served",
        ),
        bad_max_line=(("--serve", "chat", "--chat-max-line", "-3"), "chat: .*must be positive"),
        bad_history=(
            ("--serve", "chat", "--chat-history", "-1"),
            "chat: --history must be 0 or more",
        ),
    )
    def test_serve_errors(self, args, message) -> None:
        """Mistakes on the command line are usage errors that say what is wrong."""
        with self.assertRaisesRegex(usage.UsageError, message):
            parse(self.tmp_path, *args)

    def test_help_lists_every_behaviour(self) -> None:
        """twistd tcpfiles --help shows each behaviour, its endpoint, summary and own options."""
        text = tap.Options().getUsage()
        for name, behaviour in discover().items():
            assert f"  {name:<10} {behaviour.default_endpoint:<10} {behaviour.summary}" in text
        assert "--chat-history=" in text and "--oneshot-quiet=" in text

    def test_make_service_listens_for_every_behaviour(self) -> None:
        """All behaviours side by side in one service; nothing opens before start."""
        reactor = MemoryReactorWithUDP()
        options = parse(
            self.tmp_path,
            "--listen",
            "tcp:18888",
            "--serve",
            "chat=tcp:19000",
            "--serve",
            "echo=tcp:17777",
            "--serve",
            "udp-echo=udp:17777",
            "--serve",
            "oneshot=tcp:18887",
        )
        service = tap.makeService(options, reactor=reactor)
        assert reactor.tcpServers == [] and reactor.udpServers == []
        service.privilegedStartService()
        service.startService()
        assert sorted(port for port, *_ in reactor.tcpServers) == [17777, 18887, 18888, 19000]
        assert [port for port, *_ in reactor.udpServers] == [17777]
        assert len(service.trackers) == 4  # files, chat, echo, oneshot are drained on stop
        service.stopService()


class FilesPluginTests(SynchronousTestCase):
    """files is a behaviour like the others, served by default on --listen."""

    def test_found_by_get_plugins(self) -> None:
        """getPlugins finds files; it logs users in, serves the root, listens on tcp:8888."""
        from tcpfiles.files.plugin import FilesOptions, files

        found = discover()
        self.assertIs(found["files"], files)
        self.assertTrue(verifyObject(IBehaviour, files) and verifyObject(IPlugin, files))
        self.assertEqual(files.default_endpoint, "tcp:8888")
        self.assertEqual((files.logs_in, files.uses_root, files.datagram), (True, True, False))
        self.assertIs(files.options, FilesOptions)

    def test_served_on_listen_with_its_own_options(self) -> None:
        """--listen endpoints and the unprefixed options reach files' own parsed Options."""
        options = parse(
            temporary_directory(self), "-l", "tcp:1", "--max-line", "100", "--no-sendfile"
        )
        behaviour, own, where = options["serving"]["files"]
        self.assertIs(behaviour, discover()["files"])
        self.assertEqual(where, ["tcp:1"])
        self.assertEqual((own["max-line"], own["no-sendfile"]), (100, 1))
        self.assertFalse(own.limits().zero_copy)

    def test_serve_files_says_use_listen(self) -> None:
        """--serve files is refused with the way to do it: --listen."""
        with self.assertRaisesRegex(usage.UsageError, "files is served on every --listen"):
            parse(temporary_directory(self), "--serve", "files=tcp:1")

    def test_datagram_is_declared(self) -> None:
        """udp-echo declares itself a datagram behaviour; undeclared, the default endpoint says."""
        found = discover()
        self.assertEqual(
            {name for name, behaviour in found.items() if is_datagram(behaviour)}, {"udp-echo"}
        )
        self.assertTrue(is_datagram(Behaviour("d", "", "udp:1", usage.Options, print)))
        self.assertFalse(is_datagram(Behaviour("s", "", "tcp:1", usage.Options, print)))

        class Undeclared:
            default_endpoint = "UDP:9"

        self.assertTrue(is_datagram(Undeclared()))
