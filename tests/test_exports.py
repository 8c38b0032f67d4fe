"""The public names of ``felix`` and the rule that the sans-IO core never imports trio."""

from __future__ import annotations

import ast
from pathlib import Path

import felix
import felix._core
import felix.web

#: Written down from src/felix/__init__.py; removing or renaming one breaks users.
PUBLIC_NAMES = [
    "AuthenticationError",
    "BadRequest",
    "CapacityError",
    "ConnectionInfo",
    "Event",
    "EventTooLarge",
    "FelixError",
    "Frame",
    "Hub",
    "IdempotencyInProgress",
    "IdempotencyKeyReused",
    "InboxFull",
    "InvalidEvent",
    "OriginNotAllowed",
    "PublishResult",
    "RateLimited",
    "Replay",
    "STATUSES",
    "Settings",
    "SettingsError",
    "ShuttingDown",
    "Subscription",
    "TERMINAL_STATUSES",
    "WORKFLOW_EVENT_TYPES",
    "Workflow",
    "WorkflowConflict",
    "WorkflowExists",
    "WorkflowNotFound",
    "WorkflowState",
    "__version__",
    "open_hub",
    "validate_event",
]

CORE_DIR = Path(felix._core.__file__).parent
FELIX_DIR = CORE_DIR.parent


def test_public_names_are_pinned() -> None:
    assert sorted(PUBLIC_NAMES) == PUBLIC_NAMES
    assert len(felix.__all__) == len(set(felix.__all__))
    assert sorted(felix.__all__) == PUBLIC_NAMES


def test_every_public_name_exists() -> None:
    missing = [name for name in felix.__all__ if not hasattr(felix, name)]
    assert missing == []
    assert felix.__version__ == "0.1.0"


def test_web_exports() -> None:
    assert sorted(felix.web.__all__) == ["create_app", "hypercorn_config", "serve"]
    for name in felix.web.__all__:
        assert callable(getattr(felix.web, name))


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (absolute names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = "felix._core" if path.parent == CORE_DIR else "felix"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _is_trio(name: str) -> bool:
    return name == "trio" or name.startswith(("trio.", "trio_"))


def _source(module: str) -> Path | None:
    """The file of a felix module, or None for third-party and standard modules."""
    if not module.startswith("felix."):
        return None
    relative = Path(*module.split(".")[1:])
    for candidate in (
        FELIX_DIR / relative.with_suffix(".py"),
        FELIX_DIR / relative / "__init__.py",
    ):
        if candidate.is_file():
            return candidate
    return None


def test_core_does_not_import_trio() -> None:
    core_files = sorted(CORE_DIR.glob("*.py"))
    assert {path.name for path in core_files} >= {"__init__.py", "events.py", "workflow.py"}
    # The core's files, and every felix module they import in turn (felix/__init__
    # is the package, not a dependency of the core, and does import trio).
    todo = list(core_files)
    seen: set[Path] = set()
    offenders: dict[str, list[str]] = {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        names = _imports(path)
        trio_names = sorted(name for name in names if _is_trio(name))
        if trio_names:
            offenders[str(path.relative_to(FELIX_DIR))] = trio_names
        todo.extend(source for name in names if (source := _source(name)) is not None)
    assert offenders == {}
    assert FELIX_DIR / "_errors.py" in seen


def test_import_checker_sees_trio() -> None:
    tree_file = CORE_DIR / "events.py"
    assert "json" in _imports(tree_file)
    assert _is_trio("trio")
    assert _is_trio("trio.lowlevel")
    assert not _is_trio("triolet")
