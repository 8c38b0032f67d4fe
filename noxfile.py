"""Felix's sessions. ``nox -l`` lists them with these docstrings."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (real servers on port 0, real sockets)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def schemathesis(session: nox.Session) -> None:
    """Fuzz the REST API against its /openapi.json with schemathesis (bounded; about 20 s)."""
    session.install("-e", ".[test]", "schemathesis>=4")
    session.run("pytest", "-m", "schemathesis", "tests/web/test_openapi.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the architecture's import contracts.

    The contracts (``[tool.importlinter]`` in pyproject.toml) are the rules of
    docs/discussion/architecture.md: a sans-IO core, a runtime that knows no web
    layer, Hypercorn's internals behind one adapter package, and so on.
    """
    session.install("ruff>=0.17", "import-linter>=2.1", "-e", ".")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports", "--no-cache")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/ and tests/."""
    session.install("-e", ".[test]", "mypy>=2.4", "nox")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with MkDocs, failing on broken links."""
    session.install("mkdocs>=1.6", "mkdocstrings[python]>=1.0")
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/docs")


@nox.session
def soak(session: nox.Session) -> None:
    """Bounded soak: hundreds of clients joining, stalling and resuming (about 2 minutes)."""
    session.install("-e", ".")
    session.run("python", "soak/soak.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark Felix against the seed-style server (needs Node.js and npm; about 9 minutes).

    Options go after --: ``nox -s bench -- --quick``, ``nox -s bench -- --scenario fanout``.
    """
    session.install("-e", ".", "matplotlib")
    # The harness lives in bench/felix_bench, outside the shipped package.
    bench_dir = Path(__file__).resolve().parent / "bench"
    session.run("python", "-m", "felix_bench", *session.posargs, env={"PYTHONPATH": str(bench_dir)})


@nox.session
def fuzz(session: nox.Session) -> None:
    """Hostile input at every REST route and the WebSocket, at length (about 10 minutes).

    Examples per test as the first argument: ``nox -s fuzz -- 5000``.
    """
    session.install("-e", ".[test]")
    examples = session.posargs[0] if session.posargs else "1000"
    session.run(
        "pytest",
        "tests/test_fuzz.py",
        "--hypothesis-show-statistics",
        "-o",
        "faulthandler_timeout=3600",
        env={"FELIX_FUZZ_EXAMPLES": examples, "FELIX_FUZZ_BATCH": "32"},
    )
