"""Imports only go down: the kernel loads nothing above it, the file tree no behaviour, and no
behaviour another (each checked in a fresh interpreter, so sys.modules starts clean)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import tcpfiles

BEHAVIOURS = ("files", "chat", "echo", "oneshot", "udp_echo")
TOP = ("tcpfiles.plugins", "tcpfiles.compose", "tcpfiles.tap", "tcpfiles.cli", "tcpfiles.testing")

#: Imports each module given, one after the other, and prints which tcpfiles modules each one
#: added to sys.modules.
PROBE = """
import importlib, json, sys
added = {}
for name in sys.argv[1:]:
    before = set(sys.modules)
    importlib.import_module(name)
    added[name] = sorted(m for m in set(sys.modules) - before if m.startswith("tcpfiles"))
print(json.dumps(added))
"""


def modules_of(package: str) -> list[str]:
    """Every module of ``package`` (``tcpfiles.core``), the package itself first."""
    found = pkgutil.walk_packages(tcpfiles.__path__, "tcpfiles.")
    return [package] + sorted(m.name for m in found if m.name.startswith(package + "."))


def loaded_by(modules: list[str]) -> dict[str, list[str]]:
    """For each of ``modules``, imported in order in a new interpreter, what it loaded."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded: dict[str, list[str]] = json.loads(result.stdout)
    return loaded


def above(loaded: dict[str, list[str]], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Which module loaded which forbidden one (a package or anything below it)."""
    found = {
        name: [
            m for m in modules if m in forbidden or m.startswith(tuple(f + "." for f in forbidden))
        ]
        for name, modules in loaded.items()
    }
    return {name: modules for name, modules in found.items() if modules}


class FloorTests(SynchronousTestCase):
    """Each floor imports only the floors below it."""

    def test_kernel_loads_no_tree_and_no_behaviour(self) -> None:
        """Every tcpfiles.core module: no tcpfiles.tree, no behaviour, nothing on top."""
        core = modules_of("tcpfiles.core")
        self.assertIn("tcpfiles.core.plugin", core)
        forbidden = ("tcpfiles.tree",) + tuple(f"tcpfiles.{b}" for b in BEHAVIOURS) + TOP
        self.assertEqual(above(loaded_by(core), forbidden), {})

    def test_tree_loads_no_behaviour(self) -> None:
        """Every tcpfiles.tree module: the kernel only, no behaviour, nothing on top."""
        forbidden = tuple(f"tcpfiles.{b}" for b in BEHAVIOURS) + TOP
        self.assertEqual(above(loaded_by(modules_of("tcpfiles.tree")), forbidden), {})

    def test_behaviours_load_no_other_behaviour(self) -> None:
        """Each behaviour package: the kernel and the tree, never another behaviour."""
        for behaviour in BEHAVIOURS:
            others = tuple(f"tcpfiles.{b}" for b in BEHAVIOURS if b != behaviour) + TOP
            loaded = loaded_by(modules_of(f"tcpfiles.{behaviour}"))
            self.assertEqual(above(loaded, others), {}, behaviour)
