"""Every third-party package src/felix imports is a declared dependency.

An import that is only satisfied because another dependency happens to pull
the package in breaks the day that dependency stops doing so; this test reads
every module's imports (``ast``, so nothing is executed) and maps each
top-level name to its distribution.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "felix"
PYPROJECT = SRC.parent.parent / "pyproject.toml"


def imported_top_level_names() -> dict[str, str]:
    """Each top-level module imported under src/felix, with one file that imports it."""
    names: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found = [node.module]
            else:
                continue
            for name in found:
                names.setdefault(name.partition(".")[0], str(path.relative_to(SRC.parent)))
    return names


def declared_distributions() -> set[str]:
    """The names in ``[project] dependencies``, normalised (PEP 503)."""
    import tomllib

    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    return {
        _normalise(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0])
        for spec in project["dependencies"]
    }


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared() -> None:
    declared = declared_distributions()
    providers = importlib.metadata.packages_distributions()
    missing: list[str] = []
    for module, where in imported_top_level_names().items():
        if module == "felix" or module in sys.stdlib_module_names:
            continue
        distributions = {_normalise(name) for name in providers.get(module, [])}
        if not distributions & declared:
            missing.append(f"{module} (imported by {where}; from {sorted(distributions)})")
    assert missing == [], "imported but not in [project] dependencies: " + ", ".join(missing)

