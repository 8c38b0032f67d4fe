"""``felix serve``: run the server until SIGINT or SIGTERM.

Failing to start is an expected failure, told in one line and exit status 1:
a port in use, a host that does not resolve or is not an address of this
machine, a port that needs privileges, a broker that cannot be reached.
"""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import signal
import socket

import trio

from felix._errors import BrokerUnavailable
from felix._logging import configure_logging
from felix._runtime.hub import open_hub
from felix.cli._common import EXIT_USAGE, Subparsers, fail, leaf
from felix.settings import Settings, SettingsError
from felix.web import serve

__all__ = ["StartupError", "add_parser", "listen_error", "run_server"]

logger = logging.getLogger("felix")


class StartupError(Exception):
    """The server could not start listening; ``str()`` is the one line to show."""


def add_parser(subparsers: Subparsers) -> None:
    """Add ``felix serve``."""
    parser = subparsers.add_parser("serve", help="run the server (settings from FELIX_* variables)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    parser.add_argument(
        "--broker",
        help="memory (default) or a Redis URL shared by several nodes (FELIX_BROKER)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until a signal; 0 after a graceful shutdown, 1 if it could not start."""
    try:
        settings = Settings.from_env(host=args.host, port=args.port, broker=args.broker)
    except SettingsError as error:
        return fail("serve", str(error), EXIT_USAGE)
    configure_logging(settings.log_level, settings.log_format)
    try:
        trio.run(run_server, settings)
    except BaseException as raised:
        problem = leaf(raised)
        if isinstance(problem, BrokerUnavailable | StartupError):
            return fail("serve", f"cannot start: {problem}")
        raise
    return 0


def listen_error(error: OSError, host: str, port: int) -> StartupError:
    """The one line for a socket that could not be bound to ``host:port``."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(error, socket.gaierror):
        reason = f"{host!r} is not a valid address or known host name"
    elif error.errno == errno.EADDRINUSE:
        reason = "the port is in use (is another server running?)"
    elif isinstance(error, PermissionError) or error.errno == errno.EACCES:
        reason = "permission denied (ports below 1024 need privileges)"
    elif error.errno == errno.EADDRNOTAVAIL:
        reason = "the address is not one of this machine's"
    else:
        reason = (error.strerror or str(error)).lower()
    return StartupError(f"cannot listen on {where}: {reason}")


async def run_server(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully.

    Open WebSockets drain for up to ``settings.shutdown_grace`` seconds and
    are closed with 1001; the function then returns. Raises
    :class:`StartupError` when the listening socket cannot be opened, and
    :class:`felix.BrokerUnavailable` when the broker cannot be reached.
    """
    # The receiver is installed before the port opens, so a signal that
    # arrives as soon as the server answers is already ours.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def wait_for_signal() -> None:
            async for signum in signals:
                logger.info("%s received: shutting down", signal.Signals(signum).name)
                return

        async with open_hub(settings) as hub, trio.open_nursery() as nursery:
            serving = functools.partial(serve, hub, settings, shutdown_trigger=wait_for_signal)
            try:
                await nursery.start(serving)
            except BaseException as raised:
                # Before it reports ready, an OSError can only come from binding.
                error = leaf(raised)
                if isinstance(error, OSError):
                    raise listen_error(error, settings.host, settings.port) from None
                raise
            # Only once it listens: a server that cannot start says that alone.
            _warn_about_settings(settings)


def _warn_about_settings(settings: Settings) -> None:
    if settings.dev_mode:
        logger.warning(
            "FELIX_API_KEY is not set: the server runs open (development mode); "
            "anyone who can reach it can read and publish"
        )
    if settings.broker != "memory" and not settings.api_keys and not settings.token_secrets:
        logger.warning(
            "FELIX_TOKEN_SECRET is not set: subscribe tokens are signed with a secret of "
            "this process, so a token minted on one node opens no stream on another; "
            "give every node the same FELIX_API_KEY or FELIX_TOKEN_SECRET"
        )
