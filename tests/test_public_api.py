"""The public API is what docs/api.md says, and it is shipped typed.

Every module of tcpfiles is either public (a section of docs/api.md; it has ``__all__``, and the
section lists exactly its names) or named in the page's "Not public" list.  The package data
ships ``py.typed`` and every package; the modules held to ``mypy --strict`` are the same in
pyproject.toml and in .ci/typecheck.
"""

from __future__ import annotations

import configparser
import importlib
import pkgutil
import re
import tomllib
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import tcpfiles

ROOT = Path(__file__).parents[1]
API = (ROOT / "docs" / "api.md").read_text()
SECTION = re.compile(r"^### `(tcpfiles[\w.]*)`$", re.MULTILINE)
NAME = re.compile(r"^- `(\w+)`", re.MULTILINE)


def sections() -> dict[str, str]:
    """Each public module's section of docs/api.md: its text up to the next heading."""
    found: dict[str, str] = {}
    marks = list(SECTION.finditer(API))
    for mark, following in zip(marks, marks[1:] + [None], strict=True):
        end = following.start() if following else API.index("\n## ", mark.end())
        found[mark.group(1)] = API[mark.end() : end]
    return found


def not_public() -> set[str]:
    """The modules docs/api.md names under "Not public"."""
    part = API.split("\n## Not public\n", 1)[1]
    return set(re.findall(r"`(tcpfiles(?:\.\w+)*)`", part))


def every_module() -> set[str]:
    """tcpfiles and every module and package below it."""
    found = pkgutil.walk_packages(tcpfiles.__path__, "tcpfiles.")
    return {"tcpfiles"} | {m.name for m in found}


class DocumentedTests(SynchronousTestCase):
    """docs/api.md and the modules' ``__all__`` say the same."""

    def test_every_module_is_public_or_named_not_public(self) -> None:
        """No module is left out, and none is named twice or named but gone."""
        public, hidden = set(sections()), not_public()
        self.assertEqual(public & hidden, set())
        self.assertEqual(every_module() - public - hidden, set())
        self.assertEqual((public | hidden) - every_module(), set())

    def test_each_public_module_lists_its_all(self) -> None:
        """Every name of ``__all__`` is listed under its module, and only those."""
        for module, text in sections().items():
            exported = importlib.import_module(module).__dict__.get("__all__")
            self.assertIsNotNone(exported, f"{module} has no __all__")
            self.assertEqual(sorted(NAME.findall(text)), sorted(exported), module)

    def test_every_exported_name_exists(self) -> None:
        """``from module import *`` cannot fail: each name of ``__all__`` is there."""
        for module in sections():
            loaded = importlib.import_module(module)
            missing = [name for name in loaded.__all__ if not hasattr(loaded, name)]
            self.assertEqual(missing, [], module)


class PackagingTests(SynchronousTestCase):
    """What ``pip install .`` installs: every package, and the py.typed marker."""

    def setUp(self) -> None:
        self.setup = configparser.ConfigParser()
        self.setup.read(ROOT / "setup.cfg")

    def test_every_package_is_listed(self) -> None:
        """setup.cfg's explicit package list names every package under tcpfiles/."""
        listed = set(self.setup["options"]["packages"].split())
        packages = {
            ".".join(init.parent.relative_to(ROOT).parts)
            for init in (ROOT / "tcpfiles").rglob("__init__.py")
        }
        self.assertEqual(packages - listed, set())
        self.assertIn("twisted.plugins", listed)

    def test_py_typed_is_shipped(self) -> None:
        """The PEP 561 marker exists and is package data."""
        self.assertTrue((ROOT / "tcpfiles" / "py.typed").exists())
        self.assertEqual(self.setup["options.package_data"]["tcpfiles"].split(), ["py.typed"])


class StrictTests(SynchronousTestCase):
    """The modules held to ``mypy --strict`` are named alike in both places."""

    def test_pyproject_and_ci_agree(self) -> None:
        """pyproject.toml's strict override and .ci/typecheck's list are the same modules."""
        mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
        (strict,) = [o for o in mypy["overrides"] if o.get("disallow_untyped_defs")]
        configured = {m.removesuffix(".*") for m in strict["module"]}
        script = (ROOT / ".ci" / "typecheck").read_text()
        listed = re.search(r"strict=\(\n(.*?)\n\)", script, re.DOTALL)
        assert listed is not None
        paths = {line.strip().removesuffix(".py") for line in listed.group(1).splitlines()}
        self.assertEqual({p.replace("/", ".") for p in paths}, configured)
        self.assertTrue(strict["warn_return_any"] and not strict["implicit_reexport"])
