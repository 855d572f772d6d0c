"""The example plugin's own tests, run as a user runs them: by trial, in a new interpreter."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

HERE = Path(__file__).resolve().parents[1]
EXAMPLE = HERE / "examples" / "tcpfiles-reverse"


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run to completion (at most two minutes); its output, or a failure showing it."""
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(f"{command} exited {result.returncode}:\n{output}")
    return output


class ExamplePluginTests(SynchronousTestCase):
    def test_its_tests_pass_under_trial_from_its_directory(self) -> None:
        """examples/tcpfiles-reverse/tests, as its README says: trial, from that directory."""
        temp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, temp, True)
        path = os.pathsep.join(filter(None, [str(EXAMPLE), os.environ.get("PYTHONPATH")]))
        trial = [sys.executable, "-m", "twisted.trial", f"--temp-directory={temp}/_trial_temp"]
        output = run([*trial, "tests"], EXAMPLE, {**os.environ, "PYTHONPATH": path})
        self.assertRegex(output, r"PASSED \(successes=\d+\)")
        self.assertIn("test_reverse", output)
