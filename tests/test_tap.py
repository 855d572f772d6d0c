"""twistd options and the service they build, without binding anything."""

from __future__ import annotations

import pytest
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface.verify import verifyObject

from tcpfiles import tap
from tcpfiles.service import DrainingService, with_backlog


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(args))
    return options


def test_plugin_object_provides_the_interfaces():
    """The twisted/plugins module exposes an IServiceMaker plugin named tcpfiles."""
    from twisted.plugins.tcpfiles_plugin import tcpfiles

    assert verifyObject(IServiceMaker, tcpfiles) and verifyObject(IPlugin, tcpfiles)
    assert tcpfiles.tapname == "tcpfiles"


def test_defaults(tmp_path):
    """Only --root is needed; files listen on tcp:8888 with backlog 511, documented limits."""
    options = parse("--root", str(tmp_path))
    assert options["listen"] == ["tcp:8888"]
    limits = options.limits()
    assert (
        limits.max_line,
        limits.line_timeout,
        limits.idle_timeout,
        limits.stall_timeout,
        limits.max_per_peer,
        limits.max_connections,
    ) == (8192, 30, 300, 60, 64, 1024)
    assert options["grace"] == 30.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--root DIR is required"),
        (("--root", "/nonexistent/x"), "does not exist or is not a directory"),
        (("--root", "/etc/passwd"), "does not exist or is not a directory"),
        (("--root", ".", "--grace", "-1"), "must be positive"),
        (("--root", ".", "--max-per-peer", "x"), "invalid literal"),
        (("--root", ".", "--listen", "bogus:1"), "--listen 'bogus:1'"),
    ],
)
def test_usage_errors(args, message):
    """Bad options are usage errors with a message that says what is wrong."""
    with pytest.raises(usage.UsageError, match=message):
        parse(*args)


def test_make_service_listens_only_when_started(tmp_path):
    """makeService opens nothing; starting binds every --listen with a 511 backlog."""
    reactor = MemoryReactorClock()
    options = parse(
        "--root",
        str(tmp_path),
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
    assert [(port, backlog, interface) for port, _, backlog, interface in reactor.tcpServers] == [
        (1234, 511, "127.0.0.1"),
        (1235, 5, ""),
    ]
    service.stopService()


def test_with_backlog():
    """Only TCP-like endpoints without their own backlog get ours."""
    assert with_backlog("tcp:80") == "tcp:80:backlog=511"
    assert with_backlog("tcp:80:backlog=9") == "tcp:80:backlog=9"
    assert with_backlog("unix:/x.sock") == "unix:/x.sock"


def test_tls_shortcut_turns_default_endpoints_into_ssl(tmp_path):
    """--tls-cert/--tls-key make the default endpoints ssl:; explicit ones stay as given."""
    from tests.e2e.certs import make_ca, make_server_cert

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
    with pytest.raises(usage.UsageError, match="go together"):
        parse("--root", str(tmp_path), "--tls-cert", str(pair.cert))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(usage.UsageError, match="--tls-cert/--tls-key: "):
        parse(
            "--root",
            str(tmp_path),
            "--tls-cert",
            str(tmp_path / "junk.pem"),
            "--tls-key",
            str(pair.key),
        )


def test_account_options(tmp_path):
    """--auth takes strcred strings; --users and --anonymous need it; a bad users file fails."""
    options = parse("--root", str(tmp_path), "--auth", "memory:alice:pw", "--anonymous")
    assert len(options["credCheckers"]) == 1 and options["anonymous"]
    with pytest.raises(usage.UsageError, match="--anonymous needs --auth"):
        parse("--root", str(tmp_path), "--anonymous")
    (tmp_path / "users").write_text("alice nowhere rw\n")
    with pytest.raises(usage.UsageError, match="--users: .*is not a directory"):
        parse(
            "--root", str(tmp_path), "--auth", "memory:alice:pw", "--users", str(tmp_path / "users")
        )
