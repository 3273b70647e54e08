"""``LBA_REQUIRE_TORCH=1`` (set by ``.ci/run``): a test skipped because torch does not import fails.

The suite's ``tests/conftest.py`` runs as a plugin of a pytest subprocess on generated test files,
with a ``torch`` package first on the path that fails to import as a missing one does (or, for
the last case, imports).
"""

import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TORCH_IN_A_TEST = """
import pytest


def test_parity():
    pytest.importorskip("torch")


def test_parity_of_a_submodule():
    pytest.importorskip("torch.nn")


def test_needs_glibc():
    pytest.skip("needs glibc")


def test_needs_another_extra():
    pytest.importorskip("no_such_extra")


def test_plain():
    pass
"""
TORCH_AT_MODULE_LEVEL = """
import pytest

torch = pytest.importorskip("torch")


def test_parity():
    pass
"""
MISSING_TORCH = "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"


def run_pytest(tmp_path, source, require, torch_source=MISSING_TORCH):
    """Run pytest on ``source`` with the suite's conftest; ``{test or module name: (outcome, message)}``
    from its JUnit report, and the exit code."""
    (tmp_path / "site" / "torch").mkdir(parents=True)
    (tmp_path / "site" / "torch" / "__init__.py").write_text(torch_source)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_generated.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "LBA_REQUIRE_TORCH"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), str(REPO)])
    if require:
        env["LBA_REQUIRE_TORCH"] = "1"
    junit = tmp_path / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    command += ["-c", str(tmp_path / "pytest.ini"), f"--junitxml={junit}", "test_generated.py"]
    process = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    outcomes = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        results = [child for child in case if child.tag in ("skipped", "failure", "error")]
        outcome, message = (results[0].tag, results[0].get("message", "")) if results else ("passed", "")
        outcomes[case.get("name")] = (outcome, message)
    return outcomes, process.returncode


def test_without_the_variable_a_missing_torch_skips(tmp_path):
    outcomes, code = run_pytest(tmp_path, TORCH_IN_A_TEST, require=False)
    assert code == 0
    assert {name: outcome for name, (outcome, _) in outcomes.items()} == {
        "test_parity": "skipped",
        "test_parity_of_a_submodule": "skipped",
        "test_needs_glibc": "skipped",
        "test_needs_another_extra": "skipped",
        "test_plain": "passed",
    }


def test_with_the_variable_a_test_skipped_for_torch_fails_and_other_skips_stay(tmp_path):
    outcomes, code = run_pytest(tmp_path, TORCH_IN_A_TEST, require=True)
    assert code == pytest.ExitCode.TESTS_FAILED
    assert {name: outcome for name, (outcome, _) in outcomes.items()} == {
        "test_parity": "failure",
        "test_parity_of_a_submodule": "failure",
        "test_needs_glibc": "skipped",
        "test_needs_another_extra": "skipped",
        "test_plain": "passed",
    }
    assert "LBA_REQUIRE_TORCH=1: torch is required" in outcomes["test_parity"][1]
    assert "could not import 'torch'" in outcomes["test_parity"][1]


def test_with_the_variable_a_module_skipped_for_torch_is_a_collection_error(tmp_path):
    outcomes, code = run_pytest(tmp_path, TORCH_AT_MODULE_LEVEL, require=True)
    assert code == pytest.ExitCode.INTERRUPTED
    [(outcome, message)] = outcomes.values()
    assert outcome == "error" and "collection failure" in message


def test_with_the_variable_and_torch_importable_nothing_changes(tmp_path):
    outcomes, code = run_pytest(tmp_path, TORCH_AT_MODULE_LEVEL, require=True, torch_source="")
    assert code == 0
    assert outcomes == {"test_parity": ("passed", "")}
