"""Child processes of the bench: start, pin, measure, talk to and always stop them.

Every child is started in its own session (so a Ctrl-C in the terminal reaches
only the orchestrator, which then stops the children in order) and with a
parent-death signal (so even a SIGKILLed orchestrator leaves nothing behind).
Servers and generators read their CPU time and memory from ``/proc``, the
same way for both servers and for the generator.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

__all__ = [
    "BenchError",
    "Children",
    "NodeProc",
    "Pinning",
    "cpu_seconds",
    "free_port",
    "rss_bytes",
    "runqueue_wait_seconds",
    "wait_events",
    "wait_listening",
]

_PR_SET_PDEATHSIG: Final = 1
_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A run that cannot go on: a child failed, timed out or answered wrongly."""


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


# Loaded before any fork: the child only calls into it.
_LIBC: Final = _load_libc()


class Pinning:
    """Which CPU the server gets and which the generators get, and how.

    With two or more usable CPUs the server runs on the first and every
    generator on the second, so they never compete for a core; ``taskset``
    is used when installed (util-linux), else ``sched_setaffinity`` in the
    child before it executes.
    """

    def __init__(self, enabled: bool) -> None:
        usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.taskset = shutil.which("taskset")
        self.enabled = enabled and len(usable) >= 2
        self.server_cpu = usable[0] if self.enabled else None
        self.generator_cpu = usable[1] if self.enabled else None
        if not enabled:
            self.reason = "off (--no-pin)"
        elif not self.enabled:
            self.reason = f"off (only {len(usable)} usable CPU)"
        else:
            how = "taskset" if self.taskset else "sched_setaffinity"
            self.reason = (
                f"on ({how}): server on CPU {self.server_cpu}, "
                f"generators and orchestrator on CPU {self.generator_cpu}"
            )

    def describe(self) -> str:
        """One line for the report."""
        return self.reason

    def pin_self(self) -> None:
        """Keep the orchestrator off the server's CPU."""
        if self.enabled and self.generator_cpu is not None:
            os.sched_setaffinity(0, {self.generator_cpu})

    def wrap(self, command: Sequence[str], cpu: int | None) -> list[str]:
        """``command`` prefixed with ``taskset -c CPU`` when that is how we pin."""
        if cpu is None or not self.taskset:
            return list(command)
        return [self.taskset, "-c", str(cpu), *command]

    def preexec(self, cpu: int | None) -> Callable[[], None]:
        """What the child runs between fork and exec."""
        use_affinity = cpu is not None and not self.taskset

        def setup() -> None:
            # The parent-death signal: a SIGKILLed orchestrator cannot run its
            # cleanup, so the kernel sends the child SIGTERM instead.
            if _LIBC is not None:
                _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if use_affinity and cpu is not None:
                os.sched_setaffinity(0, {cpu})

        return setup


class Children:
    """Every process the bench started; :meth:`close_all` stops what is left."""

    def __init__(self, pinning: Pinning) -> None:
        self.pinning = pinning
        self._procs: list[subprocess.Popen[bytes]] = []
        self._files: dict[int, IO[bytes]] = {}

    def spawn(
        self,
        command: Sequence[str],
        *,
        cpu: int | None,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        pipes: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` pinned to ``cpu``; stderr (and stdout unless ``pipes``) to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("wb")
        try:
            proc = subprocess.Popen(
                self.pinning.wrap(command, cpu),
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else out,
                stderr=out,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=self.pinning.preexec(cpu),  # noqa: PLW1509 (single-threaded parent)
            )
        except BaseException:
            out.close()
            raise
        self._procs.append(proc)
        self._files[proc.pid] = out
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; idempotent."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=5.0)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        out = self._files.pop(proc.pid, None)
        if out is not None:
            out.close()
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self, procs: Iterable[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
        """Signal all of ``procs`` at once, then reap each (faster than one by one)."""
        procs = list(procs)
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in procs:
            self.stop(proc, grace)

    def close_all(self) -> None:
        """Stop every child still running (the cleanup of every exit path)."""
        self.stop_all(list(self._procs), grace=3.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, all its threads, from /proc."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces or parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def runqueue_wait_seconds(pid: int) -> float:
    """Seconds the threads of ``pid`` spent runnable but waiting for a CPU.

    On a shared machine this is the time other processes took from the
    server: CPU time plus this wait near 100% of the window means the server
    was saturated, whatever its CPU share shows.
    """
    total_ns = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total_ns += int(stat.read_text().split()[1])
    return total_ns / 1e9


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for process {pid}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float, log: Path) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with {proc.returncode} before listening\n{tail(log)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise BenchError(f"server not listening on port {port} after {timeout:.0f} s\n{tail(log)}")


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"    | {line}" for line in text.splitlines()[-lines:])


class NodeProc:
    """One generator process and its JSON-lines conversation.

    Events arrive in a fixed order per role (``sub``: started, ready, done;
    ``pub``: ready, published, done; ``storm``: ready, done), so
    :func:`wait_events` simply takes the next one and checks its name.
    """

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self._buffer = bytearray()
        self.events: deque[dict[str, Any]] = deque()
        self.eof = False

    @property
    def pid(self) -> int:
        """The process id (for /proc sampling)."""
        return self.proc.pid

    def send(self, command: Mapping[str, Any]) -> None:
        """Write one command line to the generator's stdin."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(command).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise BenchError(f"{self.name} is gone ({error})\n{tail(self.log)}") from None

    def feed(self) -> None:
        """Read whatever the process has written and parse complete lines."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                self.eof = True
                return
            self._buffer += chunk
            while (newline := self._buffer.find(b"\n")) >= 0:
                line = bytes(self._buffer[:newline]).strip()
                del self._buffer[: newline + 1]
                if line:
                    self.events.append(json.loads(line))

    def take(self, name: str) -> dict[str, Any] | None:
        """The next event if it has arrived; raises if it is an error or out of order."""
        if not self.events:
            if self.eof:
                code = self.proc.poll()
                raise BenchError(
                    f"{self.name} ended (exit {code}) before sending {name!r}\n{tail(self.log)}"
                )
            return None
        event = self.events.popleft()
        if event.get("event") == "error":
            raise BenchError(f"{self.name}: {event.get('message')}\n{tail(self.log)}")
        if event.get("event") != name:
            raise BenchError(f"{self.name} sent {event.get('event')!r} where {name!r} was due")
        return event


def wait_events(procs: Sequence[NodeProc], name: str, timeout: float) -> list[dict[str, Any]]:
    """Wait (at most ``timeout`` s) for event ``name`` from every one of ``procs``."""
    results: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        for index, node in enumerate(procs):
            if index not in results:
                event = node.take(name)
                if event is not None:
                    results[index] = event
        if len(results) == len(procs):
            return [results[index] for index in range(len(procs))]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            late = [node.name for index, node in enumerate(procs) if index not in results]
            raise BenchError(f"no {name!r} from {', '.join(late)} within {timeout:.0f} s")
        waiting = [node for index, node in enumerate(procs) if index not in results]
        readable, _, _ = select.select([node.fd for node in waiting], [], [], remaining)
        for node in waiting:
            if node.fd in readable:
                node.feed()
