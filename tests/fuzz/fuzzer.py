"""A fuzzer for every TCP behaviour: random and mutated requests, in memory and against twistd.

In memory, each behaviour's factory (files plain, ``--writable``, ``--auth`` with and without
``--anonymous``; echo, upper, chat, oneshot) is built over a :class:`FuzzReactor` (a ``Clock``
whose thread pool runs inline); every case is one connection on a ``StringTransport``, fed whole,
byte by byte or in random pieces, with the clock advanced at random and the connection
half-closed or dropped at the end.  A *crash* is an exception out of a protocol method (Twisted
would log it as "Unhandled Error" and drop the connection) or a logged failure (a traceback).

Against a real ``twistd`` (:func:`run_real`), the same cases go over loopback sockets from
several 127.0.0.x addresses, in bounded batches; then the server must still answer a normal
request, and its log must hold no "Unhandled Error" nor "Traceback".

Run it: ``python -m tests.fuzz.fuzzer --cases 20000 --real 500 --seed 1``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import selectors
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from tcpfiles import tap
from tcpfiles.core.plugin import Context
from tcpfiles.files.factory import make_files_factory
from tcpfiles.tree.hashing import Hasher, inline
from tcpfiles.tree.paths import Root

BEHAVIOURS = (
    "files",
    "files-rw",
    "files-auth",
    "files-auth-anon",
    "echo",
    "upper",
    "chat",
    "oneshot",
)
USERS = {"alice": b"secret"}

#: Crashes being fixed on other branches of issue 10, by a text their traceback contains: reported
#: apart, not failed on.  Empty this once the fix is merged.
KNOWN: dict[str, str] = {}  # none left: issue 10 item 4 (5000-digit numbers) is fixed


def known_cause(traceback_text: str) -> str | None:
    """The issue item a crash is already filed as, or None."""
    for needle, item in KNOWN.items():
        if needle in traceback_text:
            return item
    return None


def log_tracebacks(text: str) -> list[str]:
    """Each "Unhandled Error" or traceback in a twistd log, with its indented continuation."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if current is not None and line.startswith(("\t", " ")):
            current.append(line)
            continue
        if current is not None:
            blocks.append("\n".join(current))
            current = None
        if "Unhandled Error" in line or "Traceback" in line:
            current = [line]
    if current is not None:
        blocks.append("\n".join(current))
    return blocks


# --- the reactor --------------------------------------------------------------------------------


class InlinePool:
    """A thread pool that runs its work at once, in the caller's thread."""

    def callInThreadWithCallback(self, on_result: Callable[..., Any], f: Any, *a: Any, **kw: Any):  # noqa: N802
        try:
            result = f(*a, **kw)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


class FuzzReactor(task.Clock):
    """A Clock with what behaviours ask a reactor for besides time (threads, run inline)."""

    def getThreadPool(self) -> InlinePool:  # noqa: N802 - the reactor's API
        return InlinePool()

    def callFromThread(self, f: Any, *a: Any, **kw: Any) -> None:  # noqa: N802
        f(*a, **kw)


# --- the tree served ----------------------------------------------------------------------------


def make_tree(base: Path) -> Path:
    """A served root with small and large files, a directory, inside and escaping symlinks."""
    root = base / "files"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "sub" / "b.bin").write_bytes(os.urandom(300_000))  # over the one-step body size
    (root / "sub" / "deeper" / "c.txt").write_bytes(b"c" * 10)
    (root / "1").write_bytes(b"1")
    (root / "empty").write_bytes(b"")
    (root / "\u202eevil.txt").write_bytes(b"bidi")
    os.symlink("a.txt", root / "link")
    os.symlink("/etc/passwd", root / "escape")
    os.symlink("sub/../..", root / "up")
    os.symlink("loop", root / "loop")
    os.mkfifo(root / "fifo")
    return root


# --- inputs ------------------------------------------------------------------------------------

NAMES = [
    "a.txt",
    "sub/b.bin",
    "sub/deeper/c.txt",
    "link",
    "escape",
    "up/etc/passwd",
    "loop",
    "fifo",
    "sub",
    "/",
    "",
    "1",
    "empty",
    "\u202eevil.txt",
    "missing",
    "../etc/passwd",
    "sub/../a.txt",
    "./a.txt",
    "%2e%2e/x",
    "a\\b",
    "..",
    "sub//b.bin",
    "/a.txt",
    ".tcpfiles-x.part",
    "x" * 300,
    "/".join(["d" * 200] * 25),
    "new.txt",
    "sub/new.bin",
    "newdir",
    "sub/newdir",
    "a b c",
    "\u2028line",
    "\u200bzw",
    "\ue000pua",
    "caf\u00e9",
]
NUMBERS = [
    "0",
    "1",
    "5",
    "-1",
    "+5",
    " 5",
    "05",
    "0x10",
    "1e3",
    "\u0663",
    "9" * 20,
    "9" * 400,
    "9" * 5000,
    str(2**63),
    str(2**64 + 1),
    "",
    "nan",
    "1_000",
]
CHAT = [
    "/nick bob",
    "/nick ALICE",
    "/nick \u202eevil",
    "/nick " + "n" * 500,
    "/nick",
    "/who",
    "/me waves",
    "/msg bob hi",
    "/msg",
    "/help",
    "/quit",
    "/login alice secret",
    "/login alice wrong",
    "/login",
    "/NICK x",
    "hello",
    "",
    "/",
    "//",
    "/unknown x",
    "\u202eflipped",
    "\x1b[2J",
    "a\u2028b",
    "x" * 5000,
]
SPECIAL = [
    b"\x00",
    b"\xff",
    b"\xfe\xff",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xe2\x80",
    b"\r",
    b"\r\r\n",
    b"\t",
    b" ",
    b"\n",
    b"\x1b[31m",
    "\u202e".encode(),
    "\ufeff".encode(),
    b"%00",
    b"..",
]


def valid_line(rng: random.Random, behaviour: str) -> bytes:
    """One well-formed-looking request for the behaviour."""
    if behaviour in ("echo", "upper"):
        return rng.choice(
            [b"hello\n", b"\x00\xff" * rng.randint(1, 50), os.urandom(rng.randint(0, 3000))]
        )
    if behaviour == "chat":
        return rng.choice(CHAT).encode("utf-8", "surrogatepass") + b"\n"
    if behaviour == "oneshot":
        return rng.choice(NAMES).encode() + rng.choice([b"\n", b"\r\n", b""])
    name, number = rng.choice(NAMES), rng.choice(NUMBERS[:5])
    body = os.urandom(rng.choice([0, 1, 5, 100]))
    sha = hashlib.sha256(body).hexdigest()
    verb = rng.choice(
        [
            "GET",
            "RESUME",
            "LIST",
            "STAT",
            "PUT",
            "REPLACE",
            "MKDIR",
            "LOGIN",
            "HELP",
            "QUIT",
            "get",
            "Stat",
        ]
    )
    line = {
        "GET": f"GET {name}",
        "RESUME": f"RESUME {number} {name}",
        "LIST": rng.choice(["LIST", f"LIST {name}"]),
        "STAT": f"STAT {name}",
        "PUT": f"PUT {len(body)} {sha} {name}",
        "REPLACE": f"REPLACE {len(body)} {sha} {name}",
        "MKDIR": f"MKDIR {name}",
        "LOGIN": rng.choice(["LOGIN alice secret", "LOGIN alice nope", "LOGIN", "LOGIN alice"]),
        "HELP": "HELP",
        "QUIT": "QUIT",
    }.get(verb.upper(), verb)
    data = line.encode("utf-8", "surrogatepass") + b"\n"
    if verb.upper() in ("PUT", "REPLACE") and rng.random() < 0.7:
        data += body
    return data


def mutate(rng: random.Random, data: bytes, behaviour: str) -> bytes:
    """One random mutation of a request."""
    kind = rng.randrange(12)
    text = data.decode("utf-8", "surrogateescape")
    if kind == 0:  # a number replaced with a huge, signed or non-ASCII one
        words = text.split(" ")
        for i, word in enumerate(words):
            if word.strip().isdigit():
                words[i] = rng.choice(NUMBERS)
        return " ".join(words).encode("utf-8", "surrogateescape")
    if kind == 1:  # special bytes inserted
        at = rng.randint(0, len(data))
        return data[:at] + rng.choice(SPECIAL) * rng.randint(1, 3) + data[at:]
    if kind == 2:  # CR-only, CRLF or no line ending
        return data.replace(b"\n", rng.choice([b"\r", b"\r\n", b"", b"\n\n"]))
    if kind == 3:  # over-long
        return data.rstrip(b"\n") + b"A" * rng.choice([1000, 4096, 70_000]) + b"\n"
    if kind == 4:  # bytes flipped
        raw = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            if raw:
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if kind == 5:  # truncated
        return data[: rng.randint(0, len(data))]
    if kind == 6:  # several requests at once
        return data + b"".join(valid_line(rng, behaviour) for _ in range(rng.randint(1, 5)))
    if kind == 7:  # random bytes
        return os.urandom(rng.randint(1, 300))
    if kind == 8:  # a path or name swapped for a hostile one
        return text.replace("a.txt", rng.choice(NAMES)).encode("utf-8", "surrogatepass")
    if kind == 9:  # spaces and tabs
        return data.replace(b" ", rng.choice([b"  ", b"\t", b"", b" \x00 "]))
    if kind == 10:  # chat commands sent anywhere
        return rng.choice(CHAT).encode() + b"\n" + data
    return data * rng.randint(2, 20)


def make_case(rng: random.Random, behaviour: str) -> list[bytes]:
    """The input of one connection, as the pieces it arrives in."""
    parts = []
    if behaviour == "chat" and rng.random() < 0.7:
        parts.append(b"/nick u%d\n" % rng.randrange(50))
    if behaviour == "files-auth" and rng.random() < 0.5:
        parts.append(b"LOGIN alice secret\n")
    for _ in range(rng.randint(1, 6)):
        line = valid_line(rng, behaviour)
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            line = mutate(rng, line, behaviour)
        parts.append(line)
    data = b"".join(parts)
    split = rng.choice(["whole", "bytes", "random"])
    if split == "whole" or len(data) > 20_000:
        return [data]
    if split == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    pieces, at = [], 0
    while at < len(data):
        step = rng.randint(1, 64)
        pieces.append(data[at : at + step])
        at += step
    return pieces


# --- in memory -------------------------------------------------------------------------------


@dataclass
class Crash:
    """One failure: the behaviour, the input, and what went wrong."""

    behaviour: str
    pieces: list[bytes]
    error: str

    def reproducer(self) -> str:
        return f"behaviour={self.behaviour!r} input={b''.join(self.pieces)[:400]!r}\n{self.error}"


@dataclass
class Report:
    """What a run did."""

    cases: int = 0
    seconds: float = 0.0
    crashes: list[Crash] = field(default_factory=list)
    per_behaviour: dict[str, int] = field(default_factory=dict)

    def unknown(self) -> list[Crash]:
        """Crashes that no issue item explains yet."""
        return [crash for crash in self.crashes if known_cause(crash.error) is None]

    def distinct(self, crashes: list[Crash] | None = None) -> dict[str, Crash]:
        """One crash per distinct last traceback line and behaviour."""
        found: dict[str, Crash] = {}
        for crash in self.crashes if crashes is None else crashes:
            lines = crash.error.strip().splitlines() or [""]
            found.setdefault(f"{crash.behaviour}: {lines[-1][:160]}", crash)
        return found


def build_factories(root: Path, reactor: FuzzReactor) -> dict[str, Any]:
    """Every behaviour's factory, the way the tap builds them."""
    served = Root.at(str(root))
    checker = InMemoryUsernamePasswordDatabaseDontUse(**USERS)
    hasher = Hasher(inline)  # STAT hashes at once, in this thread, like the reactor's pool here
    factories: dict[str, Any] = {
        "files": make_files_factory(served, reactor, hasher=hasher),
        "files-rw": make_files_factory(served, reactor, writable=True, hasher=hasher),
        "files-auth": make_files_factory(
            served, reactor, writable=True, checkers=[checker], hasher=hasher
        ),
        "files-auth-anon": make_files_factory(
            served, reactor, writable=True, checkers=[checker], anonymous=True, hasher=hasher
        ),
    }
    context = Context(
        reactor, served, factories["files-auth"].portal, factories["files-auth"].limiter
    )
    for name in ("echo", "upper", "chat", "oneshot"):
        behaviour = tap.BEHAVIOURS[name]
        options = behaviour.options()
        options.parseOptions([])
        factories[name] = behaviour.build(options, context)
    return factories


def _drain(transport: StringTransport) -> None:
    """Act as a reader that takes everything: pull producers are asked until done."""
    for _ in range(2000):
        producer = transport.producer
        if producer is None or transport.disconnecting:
            return
        if transport.streaming and getattr(transport, "producerState", "") == "paused":
            producer.resumeProducing()
        elif not transport.streaming:
            producer.resumeProducing()
        else:
            return
        transport.clear()


def run_case(factory: Any, pieces: list[bytes], rng: random.Random, reactor: FuzzReactor) -> None:
    """One connection: connect, feed, let time pass, end; exceptions propagate."""
    address = IPv4Address(
        "TCP", f"127.0.{rng.randrange(4)}.{rng.randrange(1, 250)}", rng.randrange(1024, 65535)
    )
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    try:
        for piece in pieces:
            if transport.disconnecting:
                break
            protocol.dataReceived(piece)
            _drain(transport)
            transport.clear()
            if rng.random() < 0.05:
                reactor.advance(rng.choice([0.1, 0.6, 31, 61]))
        ending = rng.random()
        if ending < 0.4 and hasattr(protocol, "readConnectionLost") and not transport.disconnecting:
            protocol.readConnectionLost()
            _drain(transport)
        elif ending < 0.5:
            reactor.advance(rng.choice([1, 31, 301]))
            _drain(transport)
    finally:
        protocol.connectionLost(Failure(ConnectionError("fuzz case over")))


def run_memory(cases: int, seed: int, base: Path, time_limit: float = 600.0) -> Report:
    """``cases`` connections spread over every behaviour, in memory; the crashes found."""
    rng = random.Random(seed)
    reactor = FuzzReactor()
    factories = build_factories(make_tree(base), reactor)
    report = Report()
    logged: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            logged.append(event)

    globalLogPublisher.addObserver(observe)
    started = time.monotonic()
    try:
        for _ in range(cases):
            if time.monotonic() - started > time_limit:
                break
            behaviour = rng.choice(BEHAVIOURS)
            pieces = make_case(rng, behaviour)
            report.cases += 1
            report.per_behaviour[behaviour] = report.per_behaviour.get(behaviour, 0) + 1
            del logged[:]
            try:
                run_case(factories[behaviour], pieces, rng, reactor)
            except Exception:  # noqa: BLE001 - what we are looking for
                report.crashes.append(Crash(behaviour, pieces, traceback.format_exc()))
            for event in logged:
                failure = event["log_failure"]
                report.crashes.append(Crash(behaviour, pieces, failure.getTraceback()))
            reactor.advance(0)
    finally:
        globalLogPublisher.removeObserver(observe)
        report.seconds = time.monotonic() - started
    return report


# --- against a real twistd ---------------------------------------------------------------------

REAL_PORTS = ("files", "echo", "upper", "chat", "oneshot")


def real_server(root: Path) -> Any:
    """``twistd tcpfiles`` with every TCP behaviour, uploads and accounts (with anonymous)."""
    from tests.e2e.harness import Twistd

    server = Twistd(
        root,
        "--writable",
        "--auth",
        "memory:alice:secret",
        "--anonymous",
        "--serve",
        "echo=tcp:0:interface=127.0.0.1",
        "--serve",
        "upper=tcp:0:interface=127.0.0.1",
        "--serve",
        "chat=tcp:0:interface=127.0.0.1",
        "--serve",
        "oneshot=tcp:0:interface=127.0.0.1",
        "--idle-timeout",
        "5",
        "--line-timeout",
        "3",
    )
    server.ports = {"files": server.port}
    for name in REAL_PORTS[1:]:
        server.ports[name] = server.port_of(name)
    return server


def _real_batch(server: Any, batch: list[tuple[str, list[bytes]]], deadline: float) -> None:
    """Open, send, half-close and read a batch of cases concurrently; bounded by ``deadline``."""
    selector = selectors.DefaultSelector()
    for i, (behaviour, pieces) in enumerate(batch):
        sock = socket.socket()
        sock.bind((f"127.0.0.{2 + i % 8}", 0))
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", server.ports[behaviour]))
            for piece in _coalesce(pieces):
                sock.sendall(piece)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            continue
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=max(0.0, min(0.5, deadline - time.monotonic()))):
            sock = key.fileobj
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                sock.close()
    for key in list(selector.get_map().values()):
        selector.unregister(key.fileobj)
        key.fileobj.close()
    selector.close()


def _coalesce(pieces: list[bytes]) -> Iterator[bytes]:
    """Over a socket, byte-by-byte cases are sent in pieces of up to 7 bytes (bounded time)."""
    buffer = b""
    for piece in pieces:
        buffer += piece
        if len(buffer) >= 7:
            yield buffer
            buffer = b""
    if buffer:
        yield buffer


def run_real(
    cases: int, seed: int, base: Path, time_limit: float = 120.0
) -> tuple[int, float, str]:
    """``cases`` connections against one real twistd; (cases run, seconds, the server's log).

    Raises AssertionError if the log shows an unhandled error or a traceback (other than those
    :data:`KNOWN`), or if the server no longer answers a normal GET, echo and oneshot request.
    """
    from tests.e2e.harness import Wire

    rng = random.Random(seed)
    root = make_tree(base)
    server = real_server(root)
    started = time.monotonic()
    done = 0
    try:
        while done < cases and time.monotonic() - started < time_limit:
            size = min(32, cases - done)
            batch = []
            for _ in range(size):
                behaviour = rng.choice(REAL_PORTS)
                fuzz_as = {"files": rng.choice(BEHAVIOURS[:4])}.get(behaviour, behaviour)
                batch.append((behaviour, make_case(rng, fuzz_as)))
            _real_batch(server, batch, min(started + time_limit, time.monotonic() + 10))
            done += size
        seconds = time.monotonic() - started
        probe = Wire(server.port)
        assert probe.get("a.txt") == b"alpha\n", "the files server no longer answers"
        probe.close()
        echo = socket.create_connection(("127.0.0.1", server.ports["echo"]), timeout=10)
        echo.sendall(b"still here\n")
        assert echo.recv(100) == b"still here\n", "echo no longer answers"
        echo.close()
        oneshot = socket.create_connection(("127.0.0.1", server.ports["oneshot"]), timeout=10)
        oneshot.sendall(b"a.txt\n")
        assert oneshot.recv(100) == b"alpha\n", "oneshot no longer answers"
        oneshot.close()
    finally:
        server.stop()
    text = server.text()
    unexplained = [block for block in log_tracebacks(text) if known_cause(block) is None]
    assert not unexplained, "tracebacks in the server log:\n" + "\n\n".join(unexplained[:3])
    return done, seconds, text


def _around(text: str, needle: str, lines: int = 40) -> str:
    all_lines = text.splitlines()
    for i, line in enumerate(all_lines):
        if needle in line:
            return "\n".join(all_lines[max(0, i - 5) : i + lines])
    return ""


# --- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=5000, help="in-memory cases")
    parser.add_argument("--real", type=int, default=300, help="connections to a real twistd")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds per part")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="tcpfiles-fuzz-"))
    status = 0
    try:
        report = run_memory(args.cases, args.seed, base / "memory", args.time_limit)
        print(
            f"in memory: {report.cases} cases in {report.seconds:.1f} s "
            f"({report.per_behaviour}); {len(report.crashes)} crashes"
        )
        for title, crash in report.distinct(report.unknown()).items():
            status = 1
            print(f"--- NEW {title}\n{crash.reproducer()}")
        for title, crash in report.distinct(
            [c for c in report.crashes if known_cause(c.error)]
        ).items():
            print(f"--- known ({known_cause(crash.error)}) {title}\n{crash.reproducer()[:600]}")
        if args.real:
            (base / "real").mkdir()
            try:
                done, seconds, log = run_real(args.real, args.seed, base / "real", args.time_limit)
                known = [block for block in log_tracebacks(log) if known_cause(block)]
                print(
                    f"real twistd: {done} connections in {seconds:.1f} s; no new traceback; "
                    f"{len(known)} known ({sorted({known_cause(b) for b in known})})"
                )
            except AssertionError as exc:
                status = 1
                print(f"real twistd: FAILED\n{exc}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
