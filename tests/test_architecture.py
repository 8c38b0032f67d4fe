"""The architecture's rules that import-linter cannot see, read from the source itself.

``nox -s lint`` checks the import contracts in pyproject.toml; these tests add
what a contract cannot say: which files may import Hypercorn and the protocol
libraries at all, and that no function grows past one screen.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "felix"

#: The libraries whose internals Felix changes: only the adapter package touches them.
PROTOCOL_LIBRARIES = frozenset({"hypercorn", "wsproto", "h11", "h2"})
#: Where they may be imported: the Hypercorn adapter, the client-side patches of
#: trio-websocket (which speaks wsproto), and the one module that starts Hypercorn.
ALLOWED = ("web/hypercorn/", "_patches/", "web/app.py")
#: The client is a user of h11's and wsproto's public, sans-IO APIs (its own HTTP
#: and WebSocket connections under asyncio and Trio); it changes nothing in them.
CLIENT_LIBRARIES = frozenset({"h11", "wsproto"})
#: One screen: a function longer than this wants splitting.
MAX_FUNCTION_LINES = 60


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_protocol_libraries_are_imported_only_by_the_adapter() -> None:
    offenders = []
    for path in _sources():
        relative = path.relative_to(SRC).as_posix()
        if relative.startswith(ALLOWED):
            continue
        found = _imported_roots(ast.parse(path.read_text())) & PROTOCOL_LIBRARIES
        if relative.startswith("client/"):
            found -= CLIENT_LIBRARIES
        if found:
            offenders.append(f"{relative}: {sorted(found)}")
    assert offenders == []


def test_the_rule_sees_an_import_it_must_refuse() -> None:
    # The check above would pass vacuously if it could not see imports at all.
    assert _imported_roots(ast.parse("import h11\nfrom hypercorn.trio import serve\n")) == {
        "h11",
        "hypercorn",
    }


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.relative_to(SRC).as_posix())
def test_no_function_is_longer_than_a_screen(path: Path) -> None:
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []
