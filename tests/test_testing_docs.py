"""docs/testing.md's examples, and the example plugin's own tests, run as a user runs them:
each in a new interpreter, by trial (or pytest, for the pytest-twisted one)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

HERE = Path(__file__).resolve().parents[1]
EXAMPLE = HERE / "examples" / "tcpfiles-reverse"
#: Every example docs/testing.md marks, and what runs it.
EXAMPLES = {"unit": "trial", "e2e": "trial", "files": "trial", "clean": "trial", "pytest": "pytest"}


def examples() -> dict[str, str]:
    """The python block after each ``<!-- testing-example: NAME -->`` marker, by name."""
    text = (HERE / "docs" / "testing.md").read_text()
    found = re.findall(r"<!-- testing-example: (\w+) -->\n```python\n(.*?)```", text, re.S)
    return dict(found)


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run to completion (at most two minutes); its output, or a failure showing it."""
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(f"{command} exited {result.returncode}:\n{output}")
    return output


class DocumentedExamplesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.blocks = examples()

    def write(self, names: list[str]) -> int:
        """Write the named blocks as test modules; how many tests they hold."""
        for name in names:
            (self.directory / f"test_{name}.py").write_text(self.blocks[name])
        return sum(self.blocks[name].count("def test_") for name in names)

    def test_every_example_is_run(self) -> None:
        self.assertEqual(set(self.blocks), set(EXAMPLES))

    def test_the_trial_examples_pass_under_trial(self) -> None:
        names = [name for name, runner in EXAMPLES.items() if runner == "trial"]
        count = self.write(names)
        temp = str(self.directory / "_trial_temp")
        trial = [sys.executable, "-m", "twisted.trial", f"--temp-directory={temp}"]
        output = run([*trial, *(f"test_{name}" for name in names)], self.directory)
        self.assertIn(f"PASSED (successes={count})", output)

    def test_the_pytest_example_passes_under_pytest(self) -> None:
        count = self.write(["pytest"])
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        output = run([*pytest, "test_pytest.py"], self.directory)
        self.assertIn(f"{count} passed", output)


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
