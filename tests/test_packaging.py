"""What a (non-editable) install ships: setup.cfg lists packages by hand, so each must be there."""

from __future__ import annotations

import configparser
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

HERE = Path(__file__).resolve().parents[1]


class PackagesTests(SynchronousTestCase):
    def test_every_package_of_tcpfiles_is_listed(self) -> None:
        """A package left out of ``packages`` is missing from the wheel (``tcpfiles.files.wire``
        once was: ``import tcpfiles.files`` then failed outside an editable install)."""
        config = configparser.ConfigParser()
        config.read(HERE / "setup.cfg")
        listed = set(config["options"]["packages"].split())
        found = {
            ".".join(init.parent.relative_to(HERE).parts)
            for init in (HERE / "tcpfiles").rglob("__init__.py")
        }
        self.assertEqual(found - listed, set())
        self.assertIn("twisted.plugins", listed)  # the namespace one, found by no __init__.py
