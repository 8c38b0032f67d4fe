"""What every ``felix`` command shares: server arguments, running, and exit statuses.

Exit statuses (the same for every command): 0 success, 1 the server refused
or could not be reached (or, for ``felix serve``, could not start), 2 a usage
error, 130 interrupted; ``felix watch`` adds 3 (the workflow failed) and 4
(it was cancelled). Failures are one line on standard error, never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import trio
from rich.text import Text

from felix.client import (
    ApiError,
    ClientError,
    ConnectionFailed,
    FelixClient,
    StreamRefused,
    StreamUnauthorized,
)

__all__ = [
    "DEFAULT_URL",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "STATUSES",
    "Subparsers",
    "UsageError",
    "add_server_arguments",
    "api_key",
    "client",
    "fail",
    "leaf",
    "non_negative",
    "parse_fields",
    "positive",
    "run_command",
    "status_text",
    "url",
]

#: The server ``--url`` defaults to when ``FELIX_URL`` is not set.
DEFAULT_URL: Final = "http://127.0.0.1:8000"
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
STATUSES: Final = ("pending", "running", "completed", "failed", "cancelled")
_STATUS_STYLES: Final = {
    "pending": "dim",
    "running": "bold cyan",
    "completed": "bold green",
    "failed": "bold red",
    "cancelled": "bold yellow",
}

if TYPE_CHECKING:
    #: What ``add_subparsers()`` returns; each command module adds itself to it.
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = argparse._SubParsersAction


class UsageError(Exception):
    """A command line that cannot be acted on (exit status 2)."""


# --- arguments ---------------------------------------------------------------------------


def non_negative(raw: str) -> int:
    """An argparse type: a whole number, 0 or more."""
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{raw!r} is negative")
    return value


def positive(raw: str) -> int:
    """An argparse type: a whole number, 1 or more."""
    value = non_negative(raw)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--api-key``, for the commands that talk to a server."""
    parser.add_argument(
        "--url",
        help=f"server base URL (default: $FELIX_URL, else {DEFAULT_URL})",
    )
    parser.add_argument("--api-key", metavar="KEY", help="API key (default: $FELIX_API_KEY)")


def url(args: argparse.Namespace) -> str:
    """The server's URL: ``--url``, else ``$FELIX_URL``, else :data:`DEFAULT_URL`."""
    chosen: str = args.url or os.environ.get("FELIX_URL") or DEFAULT_URL
    return chosen


def api_key(args: argparse.Namespace) -> str | None:
    """The API key: ``--api-key``, else ``$FELIX_API_KEY``, else none."""
    key: str | None = args.api_key or os.environ.get("FELIX_API_KEY") or None
    return key


def client(args: argparse.Namespace) -> FelixClient:
    """A :class:`FelixClient` for the command's server; :class:`UsageError` for a bad URL."""
    try:
        return FelixClient(url(args), api_key(args))
    except ValueError as error:
        raise UsageError(f"--url: {error}") from None


def parse_fields(pairs: Sequence[str]) -> dict[str, Any]:
    """``["confidence=0.8", "content=hello"]`` -> ``{"confidence": 0.8, "content": "hello"}``.

    A value is JSON when it parses as JSON (``NaN`` and ``Infinity`` do not
    count: JSON cannot carry them), else the string itself. Raises
    :class:`ValueError` for an item without ``=`` or with an empty key.
    """
    fields: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{pair!r} is not key=value")
        fields[key] = _value(raw)
    return fields


def _not_json(name: str) -> Any:
    raise ValueError(name)


def _value(raw: str) -> Any:
    try:
        return json.loads(raw, parse_constant=_not_json)
    except ValueError:
        return raw


def status_text(status: str) -> Text:
    """A workflow status, coloured as the live view and the tables show it."""
    return Text(status, style=_STATUS_STYLES.get(status, ""))


# --- running a command ---------------------------------------------------------------


def fail(name: str, message: str, status: int = EXIT_ERROR) -> int:
    """Print ``felix NAME: error: MESSAGE`` as one line on stderr; return ``status``."""
    print(f"felix {name}: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    return status


def _explain(error: ClientError) -> str:
    """The one line a person sees for an error, with a hint where one helps."""
    text = " ".join(str(error).split())
    status = error.status if isinstance(error, ApiError | StreamRefused) else None
    if isinstance(error, StreamUnauthorized) or status == 401:
        return f"{text}; pass --api-key or set FELIX_API_KEY"
    if isinstance(error, ConnectionFailed):
        return f"{text} (is the server running? set --url or FELIX_URL)"
    return text


def leaf(error: BaseException) -> BaseException:
    """The one exception inside nested exception groups (Cancelled aside), if one."""
    if not isinstance(error, BaseExceptionGroup):
        return error
    leaves: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        elif not isinstance(current, trio.Cancelled):
            leaves.append(current)
    return leaves[0] if len(leaves) == 1 else error


def run_command(
    name: str, command: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace
) -> int:
    """``trio.run(command, args)``, turning the expected failures into exit statuses.

    :class:`UsageError` exits 2, a :class:`ClientError` 1, Ctrl-C 130, each
    with one line on stderr; anything else is a bug and keeps its traceback.
    """
    try:
        return trio.run(command, args)
    except BaseException as raised:
        error = leaf(raised)
        if isinstance(error, UsageError):
            return fail(name, str(error), EXIT_USAGE)
        if isinstance(error, ClientError):
            return fail(name, _explain(error))
        if isinstance(error, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        if isinstance(error, BrokenPipeError):
            # The reader went away (``| head``): silence the flush at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_ERROR
        raise
