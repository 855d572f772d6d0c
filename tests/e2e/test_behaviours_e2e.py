"""Every behaviour served side by side by one real twistd on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.e2e.cases import E2ETestCase
from tests.e2e.harness import Twistd, Wire, script

LOOP = "tcp:0:interface=127.0.0.1"
EXAMPLE = Path(__file__).parents[2] / "examples" / "tcpfiles-reverse"


def talk(port: int, data: bytes) -> bytes:
    """Send, half-close, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


class ChatUser:
    """A raw-socket chat user."""

    def __init__(self, port: int, nick: str) -> None:
        self.wire = Wire(port)
        assert self.wire.line().startswith(b"*** tcpfiles chat")
        self.wire.send(f"/nick {nick}\n".encode())
        assert self.wire.line().startswith(f"*** welcome, {nick}".encode())

    def say(self, text: str) -> None:
        self.wire.send(text.encode() + b"\n")

    def expect(self, line: str) -> None:
        got = self.wire.line().decode()
        while got != line and got.startswith("***"):  # notices may come in between
            got = self.wire.line().decode()
        assert got == line


class BehavioursTests(E2ETestCase):
    """Every behaviour served side by side by one real twistd."""

    def everything(self) -> Twistd:
        """One twistd with files plus every built-in behaviour, all on free loopback ports."""
        (self.root / "notes.txt").write_bytes(b"hello\n")
        return self.start_server(
            *[
                arg
                for name in ("echo", "upper", "chat", "oneshot")
                for arg in ("--serve", f"{name}={LOOP}")
            ],
            "--serve",
            "udp-echo=udp:0:interface=127.0.0.1",
            "--chat-history",
            "5",
        )

    def test_all_behaviours_at_once(self) -> None:
        """files, echo, upper, udp-echo and oneshot answer side by side in one process."""
        everything = self.everything()
        assert Wire(everything.port).get("notes.txt") == b"hello\n"
        assert talk(everything.port_of("echo"), b"Hi \xff there") == b"Hi \xff there"
        assert talk(everything.port_of("upper"), b"Hi \xff there") == b"HI \xff THERE"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(10)
            udp.sendto(b"datagram", ("127.0.0.1", everything.port_of("udp-echo")))
            assert udp.recvfrom(100) == (b"datagram", ("127.0.0.1", everything.port_of("udp-echo")))
        assert talk(everything.port_of("oneshot"), b"notes.txt") == b"hello\n"
        assert talk(everything.port_of("oneshot"), b"../etc/passwd") == b"1"

    def test_oneshot_like_the_tutorial_client(self) -> None:
        """A tutorial client: send the bare name, do not half-close, read until close."""
        everything = self.everything()
        with socket.create_connection(
            ("127.0.0.1", everything.port_of("oneshot")), timeout=20
        ) as s:
            s.sendall(b"notes.txt")
            data = b""
            while chunk := s.recv(1024):
                data += chunk
        assert data == b"hello\n"

    def test_get_oneshot_cli(self) -> None:
        """`tcpfiles get --oneshot` downloads, and reports a missing file with exit 1."""
        everything = self.everything()
        server = f"127.0.0.1:{everything.port_of('oneshot')}"
        out = subprocess.run(
            [script("tcpfiles"), "get", "--oneshot", "-s", server, "notes.txt"],
            cwd=self.tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert (self.tmp_path / "notes.txt").read_bytes() == b"hello\n"
        out = subprocess.run(
            [script("tcpfiles"), "get", "--oneshot", "-s", server, "gone"],
            cwd=self.tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1 and "answered 1" in out.stderr
        assert not list(self.tmp_path.glob("gone*"))

    def test_echo_cli(self) -> None:
        """`echo hi | tcpfiles echo` prints hi and exits 0; upper upper-cases."""
        everything = self.everything()
        for label, expected in (("echo", "hi\n"), ("upper", "HI\n")):
            out = subprocess.run(
                [script("tcpfiles"), "echo", "-s", f"127.0.0.1:{everything.port_of(label)}"],
                input="hi\n",
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert (out.returncode, out.stdout) == (0, expected), out.stderr

    def test_echo_reader_that_never_reads_costs_bounded_memory(self) -> None:
        """A client sends and sends but never reads: the server stops reading, memory stays flat."""
        everything = self.everything()
        port = everything.port_of("echo")
        baseline = everything.rss_kib()
        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            block = b"x" * (1 << 20)
            try:
                while sent < (1 << 30):  # bounded: 1 GiB at most, until the send blocks 2 s
                    sent += sock.send(block)
            except TimeoutError:
                pass
            grown = everything.rss_kib("VmHWM") - baseline
        assert sent < 256 << 20, f"the server kept reading: {sent} bytes accepted"
        assert grown < 16 * 1024, f"server RSS grew by {grown} KiB"

    def test_chat_room_and_shutdown_notice(self) -> None:
        """Two users talk, whisper, see history; SIGTERM tells both before closing."""
        everything = self.everything()
        port = everything.port_of("chat")
        ann = ChatUser(port, "ann")
        ann.say("first!")
        bob = ChatUser(port, "bob")
        bob.expect("<ann> first!")  # history replay
        ann.expect("*** bob joined")
        bob.say("/msg ann psst")
        ann.expect("[bob -> ann] psst")
        bob.expect("[bob -> ann] psst")  # the sender sees what was sent
        bob.say("hi \x1b[2Jann")
        ann.expect("<bob> hi \\u001b[2Jann")  # shown escaped, never raw
        everything.proc.send_signal(signal.SIGTERM)
        for user in (ann, bob):
            user.expect("*** the server is shutting down")
            while not user.wire.at_eof():
                user.wire.line()
        assert everything.stop() in (0, -signal.SIGTERM)

    def test_chat_cli_in_a_pipe(self) -> None:
        """`printf 'hello' | tcpfiles chat --nick piper`: the room hears it; the client exits 0."""
        everything = self.everything()
        port = everything.port_of("chat")
        ann = ChatUser(port, "ann")
        out = subprocess.run(
            [script("tcpfiles"), "chat", "-s", f"127.0.0.1:{port}", "--nick", "piper"],
            input="hello from the pipe\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "*** welcome, piper" in out.stdout
        ann.expect("<piper> hello from the pipe")

    def test_chat_client_reconnects_and_reclaims_its_nick(self) -> None:
        """The server goes away and comes back on the same port: the client rejoins as itself."""
        first = self.start_server("--serve", f"chat={LOOP}")
        port = first.port_of("chat")
        client = subprocess.Popen(
            [script("tcpfiles"), "chat", "-s", f"127.0.0.1:{port}", "--nick", "ann"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdin is not None and client.stdout is not None
        try:
            seen = []

            def read_until(text: str) -> None:
                for line in client.stdout:
                    seen.append(line)
                    if text in line:
                        return
                raise AssertionError(f"client output ended before {text!r}: {seen}")

            read_until("*** welcome, ann")
            first.stop()
            read_until("reconnecting")
            second = self.start_server("--serve", f"chat=tcp:{port}:interface=127.0.0.1")
            second.port_of("chat")
            read_until("*** welcome, ann")  # the nick was claimed again
            bob = ChatUser(port, "bob")
            client.stdin.write("back again\n")
            client.stdin.flush()
            bob.expect("<ann> back again")
            client.stdin.close()  # end of input: the client quits
            assert client.wait(timeout=30) == 0
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()

    def test_third_party_plugin_served_by_path(self) -> None:
        """The example package, only on PYTHONPATH, is listed by --help and served by --serve."""
        env = {**os.environ, "PYTHONPATH": str(EXAMPLE)}
        help_text = subprocess.run(
            [script("twistd"), "tcpfiles", "--help"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert "reverse    tcp:7779   returns each line reversed" in help_text
        assert "--reverse-max-line=" in help_text
        server = Twistd(
            self.root, "--serve", f"reverse={LOOP}", "--reverse-max-line", "64", env=env
        )
        try:
            assert talk(server.port_of("reverse"), "héllo\n".encode()) == "olléh\n".encode()
            assert talk(server.port_of("reverse"), b"x" * 100) == b"line too long\n"
        finally:
            server.stop()
        server.assert_clean_log()

    def test_example_plugin_discovered_in_process(self) -> None:
        """getPlugins finds the example through tcpfiles.plugins' extended package path."""
        code = "from tcpfiles.core.plugin import discover; print(sorted(discover()))"
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONPATH": str(EXAMPLE)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "'reverse'" in out.stdout, out.stderr

    def test_echo_stream_comes_back_byte_exact(self) -> None:
        """32 MiB written while reading: every byte back, in order (the eager-write path)."""
        import hashlib
        import threading

        everything = self.everything()
        data = hashlib.sha256(b"seed").digest() * (1 << 20)  # 32 MiB, not all one byte
        with socket.create_connection(
            ("127.0.0.1", everything.port_of("echo")), timeout=20
        ) as sock:
            writer = threading.Thread(
                target=lambda: (sock.sendall(data), sock.shutdown(socket.SHUT_WR))
            )
            writer.start()
            digest, received = hashlib.sha256(), 0
            while chunk := sock.recv(1 << 20):
                digest.update(chunk)
                received += len(chunk)
            writer.join(timeout=20)
        assert received == len(data)
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def run_doc_example(document: str, marker: str, tmp_path: Path) -> tuple[subprocess.Popen, list]:
    """Run the python block after ``marker`` in ``document`` on free loopback ports; the process
    and the ports of its ``listening on`` line, in the order of its endpoints."""
    text = (Path(__file__).parents[2] / document).read_text()
    code = text.split(f"<!-- {marker} -->\n```python\n")[1].split("```")[0]
    for port in ("8888", "9000", "7790"):
        code = code.replace(f'"tcp:{port}"', f'"{LOOP}"')
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "hi.txt").write_bytes(b"composed")
    (tmp_path / "example.py").write_text(code)
    proc = subprocess.Popen(
        [sys.executable, "example.py"], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line
    return proc, [int(address.rsplit(":", 1)[1]) for address in line.split()[2:]]


def stop_doc_example(proc: subprocess.Popen) -> None:
    """SIGTERM: the shutdown trigger drains the service, then the process ends."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def first_line(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        return sock.makefile("rb").readline()


class DocExampleTests(E2ETestCase):
    """The composition examples of the README and the plugin guide run as written."""

    def test_compose_example_from_readme(self) -> None:
        """The README's make_service example serves files and the chat, as shown."""
        proc, (files, chat) = run_doc_example("README.md", "compose-example", self.tmp_path)
        try:
            assert Wire(files).get("hi.txt") == b"composed"
            assert first_line(chat).startswith(b"*** tcpfiles chat: /nick NAME to join")
        finally:
            stop_doc_example(proc)

    def test_compose_example_from_the_plugin_guide(self) -> None:
        """docs/plugins.md's full example serves files, the chat and its own behaviour."""
        proc, (files, chat, shout) = run_doc_example(
            "docs/plugins.md", "compose-full-example", self.tmp_path
        )
        try:
            assert Wire(files).get("hi.txt") == b"composed"
            assert first_line(chat).startswith(b"*** tcpfiles chat")
            with socket.create_connection(("127.0.0.1", shout), timeout=20) as sock:
                sock.sendall(b"hello\nagain\n")  # no half-close: the example is not half-closeable
                answers = sock.makefile("rb")
                assert (answers.readline(), answers.readline()) == (b"HELLO\n", b"AGAIN\n")
        finally:
            stop_doc_example(proc)
