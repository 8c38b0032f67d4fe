"""The two servers under test: Felix and the seed-style baseline.

Each run gets a fresh server on a free port of 127.0.0.1, so no run inherits
another's workflows, connections or heap. Felix is ``felix serve`` from the
bench's own environment; the seed-style server runs its own ``run.sh`` from
a virtual environment the bench creates (it is never imported).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from felix_bench._procs import BenchError, Children, free_port, tail, wait_listening

__all__ = [
    "CLUSTERS",
    "FELIX_BENCH_ENV",
    "SERVERS",
    "Server",
    "ServerSetup",
    "create_workflows",
    "prepare_seed_venv",
    "running_server",
    "server_command",
    "start_redis",
]

SERVERS: Final = ("felix", "seed")

#: Settings the bench gives Felix, beyond its defaults, and why (printed with
#: the results). No FELIX_API_KEY: development mode, like the seed without one.
FELIX_BENCH_ENV: Final[dict[str, tuple[str, str]]] = {
    "FELIX_LOG_LEVEL": ("WARNING", "the seed-style server logs at warning level too"),
    "FELIX_SHUTDOWN_GRACE": ("1", "faster teardown between runs; no run measures shutdown"),
}


@dataclass
class ServerSetup:
    """How to start each server; built once per bench."""

    seed_dir: Path
    seed_python: Path
    felix_command: list[str]
    felix_extra_env: dict[str, str] = field(default_factory=dict)

    def felix_env(self) -> dict[str, str]:
        """Felix's environment: none of the caller's FELIX_* settings, the bench's instead."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FELIX_")}
        env.update({name: value for name, (value, _why) in FELIX_BENCH_ENV.items()})
        env.update(self.felix_extra_env)
        return env

    def seed_env(self, port: int) -> dict[str, str]:
        """The seed's environment: its run.sh reads PORT and PYTHON; no API key."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FELIX_")}
        env.update(PORT=str(port), PYTHON=str(self.seed_python))
        return env


@dataclass
class Server:
    """A started server: its name, the port clients publish to, and its processes.

    A cluster (``felix-redis-x2``) is several Felix nodes and a redis-server:
    ``ws_ports`` are the nodes subscribers are dealt over, ``pids`` every
    process whose CPU and memory count as the server's.
    """

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    ws_ports: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ws_ports = self.ws_ports or [self.port]
        self.pids = self.pids or [self.proc.pid]

    @property
    def pid(self) -> int:
        """The (first) node's process id (run.sh and taskset exec, so it is Python's)."""
        return self.proc.pid


#: The cluster variants ``nox -s bench -- --cluster`` compares with one in-memory
#: node: (Felix nodes, with a Redis broker).
CLUSTERS: Final = {"felix": (1, False), "felix-redis": (1, True), "felix-redis-x2": (2, True)}


def felix_command() -> list[str]:
    """``felix serve`` from the environment the bench runs in."""
    script = Path(sys.executable).parent / "felix"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), "serve"]
    return [sys.executable, "-m", "felix.cli", "serve"]


def prepare_seed_venv(seed_dir: Path, venv_dir: Path, say: Any) -> Path:
    """Create (or reuse) the seed-style server's virtual environment; return its python.

    A marker holds the hash of requirements.txt and the Python version, so a
    changed pin list gets a fresh environment.
    """
    requirements = seed_dir / "requirements.txt"
    if not (seed_dir / "run.sh").is_file() or not requirements.is_file():
        raise BenchError(
            f"no seed-style server at {seed_dir} (run.sh and requirements.txt); "
            "set FELIX_BENCH_SEED_DIR or --seed-dir"
        )
    digest = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()
    marker = venv_dir / "felix-bench-requirements.sha256"
    python = venv_dir / "bin" / "python"
    if marker.is_file() and marker.read_text().strip() == digest and python.exists():
        return python
    say(f"creating the seed-style server's environment in {venv_dir} (pip install, once)")
    if venv_dir.exists():
        shutil.rmtree(venv_dir)
    venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"pip install for the seed-style server failed:\n{result.stderr[-3000:]}")
    marker.write_text(digest + "\n")
    return python


def server_command(
    name: str, setup: ServerSetup, port: int
) -> tuple[list[str], dict[str, str], Path | None]:
    """How to start server ``name`` (``felix`` or ``seed``) on ``port``: command, env, cwd."""
    if name == "felix":
        command = [*setup.felix_command, "--host", "127.0.0.1", "--port", str(port)]
        return command, setup.felix_env(), None
    return ["bash", str(setup.seed_dir / "run.sh")], setup.seed_env(port), setup.seed_dir


def start_redis(
    children: Children, cpu: int | None, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on a free port, without persistence; returns it and its URL.

    It lives in memory only: it outlives a Felix node's restart, which is all
    the bench needs of it.
    """
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise BenchError("this needs redis-server (Debian: apt-get install redis-server)")
    port = free_port()
    redis = children.spawn(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        cpu=cpu,
        log=log,
    )  # fmt: skip
    try:
        wait_listening(redis, port, timeout=30.0, log=log)
    except BaseException:
        children.stop(redis, grace=5.0)
        raise
    return redis, f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def running_server(
    name: str, setup: ServerSetup, children: Children, cpu: int | None, log: Path
) -> Iterator[Server]:
    """Start server ``name`` on a free port, wait until it listens, stop it on exit."""
    if name in CLUSTERS and name != "felix":
        with _running_cluster(name, setup, children, cpu, log) as cluster:
            yield cluster
        return
    port = free_port()
    command, env, cwd = server_command(name, setup, port)
    proc = children.spawn(command, cpu=cpu, log=log, env=env, cwd=cwd)
    try:
        wait_listening(proc, port, timeout=60.0, log=log)
        yield Server(name=name, port=port, proc=proc, log=log)
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode} during the run\n{tail(log)}")
    finally:
        children.stop(proc, grace=5.0)


@contextlib.contextmanager
def _running_cluster(
    name: str, setup: ServerSetup, children: Children, cpu: int | None, log: Path
) -> Iterator[Server]:
    # Every process of the cluster on the server's CPU: the comparison with
    # one node is then per core, and the generators keep the other core.
    nodes, _broker = CLUSTERS[name]
    redis, redis_url = start_redis(children, cpu, log.with_name(log.stem + "-redis.log"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        env = {**setup.felix_env(), "FELIX_BROKER": redis_url}
        ports = [free_port() for _ in range(nodes)]
        for index, port in enumerate(ports):
            node_log = log.with_name(f"{log.stem}-node{index}.log")
            command = [*setup.felix_command, "--host", "127.0.0.1", "--port", str(port)]
            proc = children.spawn(command, cpu=cpu, log=node_log, env=env)
            procs.append(proc)
            wait_listening(proc, port, timeout=60.0, log=node_log)
        yield Server(
            name=name,
            port=ports[0],
            proc=procs[0],
            log=log,
            ws_ports=ports,
            pids=[*(proc.pid for proc in procs), redis.pid],
        )
        for proc in (*procs, redis):
            if proc.poll() is not None:
                raise BenchError(f"{name}: a process exited with {proc.returncode} during the run")
    finally:
        for proc in procs:
            children.stop(proc, grace=5.0)
        children.stop(redis, grace=5.0)


def _request(port: int, method: str, path: str, body: Any) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = json.dumps(body).encode()
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")


def create_workflows(server: Server, count: int, prefix: str = "bench") -> list[str]:
    """Create ``count`` workflows with known ids (the only create fields the seed knows)."""
    ids = [f"{prefix}-{index:04d}" for index in range(count)]
    for workflow_id in ids:
        status, answer = _request(
            server.port,
            "POST",
            "/api/v1/workflows",
            {"workflow_id": workflow_id, "task": "felix bench"},
        )
        if status != 201:
            raise BenchError(f"{server.name}: creating {workflow_id} answered {status}: {answer}")
    return ids


def describe_env(extra: Mapping[str, str]) -> list[str]:
    """The FELIX_* settings of the run, one line each, with the reason."""
    lines = [f"{name}={value} ({why})" for name, (value, why) in FELIX_BENCH_ENV.items()]
    lines += [f"{name}={value} (--felix-env)" for name, value in extra.items()]
    return lines
