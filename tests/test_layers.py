"""The house's import rules, checked on the code (docs/architecture.md).

Floors, imports only going down: the kernel (``tcpfiles.core``) loads no other part of tcpfiles;
the file tree (``tcpfiles.tree``) only the kernel; a behaviour the kernel and the tree, never
another behaviour; the top floor (compose, tap, cli, testing, the plugins package) anything.
Checked twice: by what a fresh interpreter actually loads, and statically on every import
statement (function-level ones included, which a load never runs).  No library module names the
global reactor: only the two entry points (``tcpfiles.tap`` for twistd, the CLI's) pick it.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import tcpfiles

BEHAVIOURS = ("files", "chat", "echo", "oneshot", "udp_echo")
TOP = (
    "tcpfiles.plugins",
    "tcpfiles.compose",
    "tcpfiles.tap",
    "tcpfiles.cli",
    "tcpfiles.testing",
    "tcpfiles.logs",
    "tcpfiles.prometheus",
    "tcpfiles.metrics_page",
    "tcpfiles.status",
    "tcpfiles.tallies",
)

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


# --- the same rules, read statically off every import statement -------------------------------

PACKAGE = Path(tcpfiles.__file__).parent
#: the drop-in package discovery scans (its ``__init__`` only extends its path)
PLUGIN_POINT = "tcpfiles.plugins"
#: the only modules that may name the global reactor: twistd's entry and the CLI's
REACTOR_PICKERS = ("tcpfiles.tap", "tcpfiles.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside a function."""
    return imports_in(path.read_text())


def imports_in(source: str) -> set[str]:
    """Every module ``source`` imports (absolute imports: the package uses no relative ones)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def floor_of(module: str) -> str:
    """``core``, ``tree``, a behaviour's name, or ``top``."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("core", "tree", *BEHAVIOURS):
        return parts[1]
    return "top"


def allowed(importer: str, imported: str) -> bool:
    """Whether the floor of ``importer`` may import ``imported`` (a tcpfiles module)."""
    here, there = floor_of(importer), floor_of(imported)
    if imported in ("tcpfiles", PLUGIN_POINT) or here == "top" or here == there:
        return True
    if here == "core":
        return False
    if here == "tree":
        return there == "core"
    return there in ("core", "tree")  # a behaviour


class ImportRuleTests(SynchronousTestCase):
    """Each rule, read off the source of every module (function-level imports included)."""

    def test_imports_only_go_down_and_behaviours_never_import_each_other(self) -> None:
        wrong = [
            f"{importer} imports {imported}"
            for importer, path in library_modules().items()
            for imported in sorted(imports_of(path))
            if imported in library_modules() and not allowed(importer, imported)
        ]
        self.assertEqual(wrong, [])

    def test_no_library_module_names_the_global_reactor(self) -> None:
        wrong = [
            name
            for name, path in library_modules().items()
            if "twisted.internet.reactor" in imports_of(path) and name not in REACTOR_PICKERS
        ]
        self.assertEqual(wrong, [])

    def test_the_rules_see_a_wrong_import(self) -> None:
        """The checker itself: each kind of wrong import is caught, the right ones pass."""
        self.assertFalse(allowed("tcpfiles.core.plugin", "tcpfiles.tree.paths"))
        self.assertFalse(allowed("tcpfiles.tree.store", "tcpfiles.files.wire"))
        self.assertFalse(allowed("tcpfiles.chat.protocol", "tcpfiles.files.wire"))
        self.assertFalse(allowed("tcpfiles.oneshot.plugin", "tcpfiles.echo.protocol"))
        self.assertTrue(allowed("tcpfiles.chat.protocol", "tcpfiles.core.auth"))
        self.assertTrue(allowed("tcpfiles.files.server", "tcpfiles.tree.store"))
        self.assertTrue(allowed("tcpfiles.tap", "tcpfiles.chat.plugin"))
        self.assertFalse(allowed("tcpfiles.core.plugin", "tcpfiles.plugins.tcpfiles_builtins"))
        self.assertIn(
            "twisted.internet.reactor",
            imports_in("def f():\n    from twisted.internet import reactor\n"),
        )


def rooms() -> dict[str, set[str]]:
    """The import graph between rooms (``core``, ``tree``, each behaviour, each top module)."""

    def room(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else "tcpfiles"

    graph: dict[str, set[str]] = {}
    modules = library_modules()
    for importer, path in modules.items():
        here = room(importer)
        graph.setdefault(here, set())
        for imported in imports_of(path):
            if imported in modules and room(imported) not in (here, "tcpfiles"):
                graph[here].add(room(imported))
    graph.pop("tcpfiles", None)
    return graph


def diagram() -> str:
    """The rooms' import graph as a Mermaid flowchart (docs/architecture.md embeds it)."""
    lines = ["```mermaid", "flowchart TD"]
    for here, theres in sorted(rooms().items()):
        lines += [f"    {here} --> {there}" for there in sorted(theres)]
    return "\n".join(lines + ["```"])


REACTOR_PROBE = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print("twisted.internet.reactor" in sys.modules)
"""


class ReactorTests(SynchronousTestCase):
    """Library code is handed a reactor; it never picks the global one."""

    def test_importing_every_library_module_installs_no_reactor(self) -> None:
        library = [
            name
            for name in library_modules()
            if name not in REACTOR_PICKERS and name != "tcpfiles.__main__"
        ]
        result = subprocess.run(
            [sys.executable, "-c", REACTOR_PROBE, *library],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        self.assertEqual(result.stdout.strip(), "False")


class ArchitectureDocTests(SynchronousTestCase):
    def test_the_architecture_page_shows_the_imports_as_they_are(self) -> None:
        page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
        self.assertIn(diagram(), page, "regenerate with: python -m tests.test_layers")


#: Longest module and longest function, in lines (docs/architecture.md).
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 70


class SizeTests(SynchronousTestCase):
    """Small modules named for what they do; short functions."""

    def test_no_module_is_too_long(self) -> None:
        long = {
            name: lines
            for name, path in library_modules().items()
            if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
        }
        self.assertEqual(long, {})

    def test_no_function_is_too_long(self) -> None:
        long = {
            f"{name}.{node.name}": node.end_lineno - node.lineno + 1
            for name, path in library_modules().items()
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
        }
        self.assertEqual(long, {})


if __name__ == "__main__":
    print(diagram())
