"""The kernel's promises in a real twistd, for behaviours that do nothing about them: the example
plugin's idle connections are closed, a plain factory from a plugin is limited and drained, and
oneshot's idle timeout is applied."""

from __future__ import annotations

import os
import signal
import socket
import textwrap
import time
from pathlib import Path

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Twistd

LOOP = "tcp:0:interface=127.0.0.1"
EXAMPLE = Path(__file__).parents[2] / "examples" / "tcpfiles-reverse"

#: A third-party behaviour whose build() returns a plain Factory.forProtocol: no limits, no
#: drain(), no idle handling of its own.
PLAIN_PLUGIN = '''
from twisted.internet.protocol import Factory, Protocol

from tcpfiles.core.plugin import Behaviour, ConnectionOptions


class Hello(Protocol):
    def connectionMade(self):
        self.transport.write(b"hello\\n")


class HelloOptions(ConnectionOptions):
    """Only the kernel's settings."""


hello = Behaviour(
    "hello",
    "says hello, then holds the connection (a test plugin)",
    "tcp:7790",
    HelloOptions,
    lambda options, context: Factory.forProtocol(Hello),
)
'''


def closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (bounded by the socket's timeout)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=20)


class GuardE2ETests(E2ETestCase):
    """The kernel's promises kept in a real twistd for behaviours that do nothing about them."""

    def plain_plugin(self) -> dict[str, str]:
        """The environment of a twistd that finds PLAIN_PLUGIN as a drop-in module."""
        plugins = self.tmp_path / "dropin" / "tcpfiles" / "plugins"
        plugins.mkdir(parents=True)
        (plugins / "tcpfiles_e2e_hello.py").write_text(textwrap.dedent(PLAIN_PLUGIN))
        return {**os.environ, "PYTHONPATH": str(self.tmp_path / "dropin")}

    def test_example_plugins_idle_connection_is_closed(self) -> None:
        """--reverse-idle-timeout is applied to the example, which has no timer of its own; a
        connection that talks stays open meanwhile."""
        env = {**os.environ, "PYTHONPATH": str(EXAMPLE)}
        server = Twistd(
            self.root, "--serve", f"reverse={LOOP}", "--reverse-idle-timeout", "1", env=env
        )
        try:
            port = server.port_of("reverse")
            with connect(port) as silent, connect(port) as talking:
                started = time.monotonic()
                for _ in range(3):  # well past the timeout in all, never silent for it
                    talking.sendall(b"abc\n")
                    assert talking.recv(100) == b"cba\n"
                    time.sleep(0.4)
                assert closed_by_server(silent) == b""
                assert time.monotonic() - started >= 1.0
                talking.sendall(b"still here\n")
                assert talking.recv(100) == b"ereh llits\n"
                assert closed_by_server(talking) == b""  # its own second of silence
        finally:
            server.stop()
        server.assert_clean_log()

    def test_plain_factory_is_limited_and_drained(self) -> None:
        """Past --hello-max-per-peer a connection is refused (and logged); on SIGTERM the held
        connections are closed at once, not after --grace."""
        server = Twistd(
            self.root,
            "--serve",
            f"hello={LOOP}",
            "--hello-max-per-peer",
            "2",
            "--grace",
            "60",
            env=self.plain_plugin(),
        )
        try:
            port = server.port_of("hello")
            held = [connect(port), connect(port)]
            for sock in held:
                assert sock.recv(100) == b"hello\n"
            with connect(port) as third:
                assert closed_by_server(third) == b""
            server.wait_for(r"refused 127\.0\.0\.1:\d+: too many connections from your address")
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            for sock in held:
                assert closed_by_server(sock) == b""
                sock.close()
            assert server.stop(timeout=30) in (0, -signal.SIGTERM)
            assert time.monotonic() - started < 30  # drained, not dropped at the end of --grace
        finally:
            server.stop()
        assert "waiting up to 60 s for 2 connection(s) to finish" in server.text()
        assert "dropping" not in server.text()
        server.assert_clean_log()

    def test_oneshot_idle_timeout(self) -> None:
        """--oneshot-idle-timeout ends a connection that sends no name before the name deadline:
        answered 1, like a late name, and logged."""
        server = Twistd(
            self.root,
            "--serve",
            f"oneshot={LOOP}",
            "--oneshot-idle-timeout",
            "1",
            "--oneshot-name-timeout",
            "60",
        )
        try:
            with connect(server.port_of("oneshot")) as sock:
                started = time.monotonic()
                assert closed_by_server(sock) == b"1"
                assert 1.0 <= time.monotonic() - started < 30
            server.wait_for(r"oneshot  -> refused: idle for 1 s 0 bytes")
        finally:
            server.stop()
        server.assert_clean_log()
