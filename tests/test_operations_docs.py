"""docs/operations.md: its systemd units are valid, and their command lines parse as twistd's."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from twisted.internet import endpoints
from twisted.python.systemd import ListenFDs
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tcpfiles import logs
from tests.e2e.harness import script

PAGE = Path(__file__).parent.parent / "docs" / "operations.md"
#: Where the page installs tcpfiles; the tests use this environment's twistd instead.
INSTALLED = "/opt/tcpfiles/bin/twistd"


def units() -> dict[str, str]:
    """``{"tcpfiles.service": text, "tcpfiles.service.d/writable.conf": text, ...}``."""
    found = re.findall(r"<!-- unit: (\S+) -->\n```ini\n(.*?)```", PAGE.read_text(), re.S)
    return dict(found)


def exec_starts(text: str) -> list[list[str]]:
    """The command lines of a unit's non-empty ``ExecStart=`` lines."""
    lines = re.findall(r"^ExecStart=(.+)$", text, re.M)
    return [shlex.split(line) for line in lines]


class UnitTests(SynchronousTestCase):
    """Every unit and drop-in of the page, checked by systemd's own tool and by twistd's parser."""

    def setUp(self) -> None:
        self.units = units()
        self.directory = Path(tempfile.mkdtemp(prefix="tcpfiles-test-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    def test_the_page_has_the_units_it_describes(self) -> None:
        """The service and its four drop-ins, the socket and the template sharing it;
        Type=notify; the JSON file's variable is ours; the socket's name is the one the
        template's endpoint asks for; --workers with KillMode=mixed."""
        self.assertEqual(
            sorted(self.units),
            [
                "tcpfiles.service",
                "tcpfiles.service.d/json-file.conf",
                "tcpfiles.service.d/json.conf",
                "tcpfiles.service.d/workers.conf",
                "tcpfiles.service.d/writable.conf",
                "tcpfiles.socket",
                "tcpfiles@.service",
            ],
        )
        self.assertIn("FileDescriptorName=files\n", self.units["tcpfiles.socket"])
        self.assertIn("ListenStream=0.0.0.0:8888\n", self.units["tcpfiles.socket"])
        template = self.units["tcpfiles@.service"]
        self.assertIn("Sockets=tcpfiles.socket\n", template)
        self.assertIn("--listen systemd:domain=INET:name=files", template)
        self.assertIn("KillMode=mixed\n", self.units["tcpfiles.service.d/workers.conf"])
        self.assertIn("Type=notify\n", self.units["tcpfiles.service"])
        self.assertIn(
            f"Environment={logs.ENVIRONMENT}=", self.units["tcpfiles.service.d/json-file.conf"]
        )

    def test_every_command_line_parses_as_twistd_would(self) -> None:
        """Each ExecStart runs the installed twistd with -n, no pidfile, and options twistd and
        tcpfiles accept (--logger resolves), once the root is a directory that exists, and
        the socket unit's named socket is what systemd passed."""
        root = self.directory / "files"
        root.mkdir()
        self.patch(endpoints._SystemdParser, "_sddaemon", ListenFDs([3], ("files",)))
        commands = [argv for text in self.units.values() for argv in exec_starts(text)]
        self.assertEqual(len(commands), 6)
        for argv in commands:
            self.assertEqual(argv[0], INSTALLED)
            args = [str(root) if arg == "/srv/files" else arg for arg in argv[1:]]
            options = ServerOptions()
            options.parseOptions(args)
            self.assertEqual((options["nodaemon"], options["pidfile"]), (True, ""))
            self.assertEqual(options.subCommand, "tcpfiles")
            self.assertEqual(options.subOptions["root"].path, str(root))
            if "--logger" in args:
                self.assertIs(options["logger"], logs.json_logger)

    def test_systemd_analyze_verifies_each_unit(self) -> None:
        """systemd-analyze verify: no unknown directive, no bad value, the command exists; the
        service alone and with each drop-in (each replaces ExecStart= on its own)."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze is not installed")
        twistd = script("twistd")
        for dropin in [None, *(name for name in self.units if "/" in name)]:
            where = self.directory / (dropin or "alone").replace("/", "-")
            (where / "tcpfiles.service.d").mkdir(parents=True)
            chosen = ["tcpfiles.service"] + ([dropin] if dropin else [])
            for name in chosen:
                (where / name).write_text(self.units[name].replace(INSTALLED, twistd))
            result = subprocess.run(
                [analyze, "verify", "tcpfiles.service"],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "SYSTEMD_UNIT_PATH": f"{where}:"},
            )
            ours = [line for line in result.stderr.splitlines() if str(where) in line]
            self.assertEqual((result.returncode, ours), (0, []), (dropin, result.stderr))

    def test_systemd_analyze_verifies_the_socket_and_its_template(self) -> None:
        """The socket unit and an instance of the template that shares it, verified together."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze is not installed")
        twistd = script("twistd")
        for name in ("tcpfiles.socket", "tcpfiles@.service"):
            (self.directory / name).write_text(self.units[name].replace(INSTALLED, twistd))
        result = subprocess.run(
            [analyze, "verify", "tcpfiles.socket", "tcpfiles@1.service"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "SYSTEMD_UNIT_PATH": f"{self.directory}:"},
        )
        ours = [line for line in result.stderr.splitlines() if str(self.directory) in line]
        self.assertEqual((result.returncode, ours), (0, []), result.stderr)
