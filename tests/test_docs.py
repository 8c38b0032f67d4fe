"""The documentation stays true: every setting is documented, every example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from felix.settings import ENVIRONMENT

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.py"))


def test_configuration_reference_lists_every_variable() -> None:
    text = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")
    # Whole names only: FELIX_MAX_CONNECTIONS is a prefix of another variable.
    missing = [
        variable
        for variable, _kind, _doc in ENVIRONMENT.values()
        if not re.search(rf"\b{variable}\b", text)
    ]
    assert not missing, f"docs/reference/configuration.md does not mention {missing}"


def test_there_are_examples() -> None:
    # A moved directory would otherwise make the parametrised test vanish silently.
    assert EXAMPLES, f"no examples found in {DOCS / 'examples'}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_is_shown_in_the_docs(example: Path) -> None:
    # MkDocs without plugins cannot include files, so pages carry copies;
    # this keeps each copy identical to the file that test_example_runs runs.
    source = example.read_text(encoding="utf-8").rstrip("\n")
    pages = [page for page in DOCS.rglob("*.md") if source in page.read_text(encoding="utf-8")]
    assert pages, f"no page under docs/ shows {example.name} verbatim"


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(example: Path) -> None:
    # Development mode and warnings as errors, as the test suite runs: a
    # ResourceWarning raised during garbage collection cannot fail the exit
    # status, so stderr is checked for it too.
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", str(example)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    report = (
        f"{example.name} exited with {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    assert result.returncode == 0, report
    assert "ResourceWarning" not in result.stderr, report
