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


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """The lines of a function's signature and code; its docstring is not counted."""
    lines = (node.end_lineno or node.lineno) - node.lineno + 1
    first = node.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        lines -= (first.end_lineno or first.lineno) - first.lineno + 1
    return lines


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.relative_to(SRC).as_posix())
def test_no_function_is_longer_than_a_screen(path: Path) -> None:
    long = [
        f"{node.name} ({_code_lines(node)} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and _code_lines(node) > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_a_docstring_is_not_counted_but_code_is() -> None:
    tree = ast.parse('def f():\n    """Doc\n\n    more.\n    """\n    x = 1\n    return x\n')
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    assert _code_lines(function) == 3
