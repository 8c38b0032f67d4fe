"""The ``felix`` command: ``felix serve`` and ``felix demo``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from felix import bench
from felix._errors import BrokerUnavailable
from felix._logging import configure_logging
from felix._runtime.hub import open_hub
from felix.cli_tools import add_commands
from felix.demo import run_demo
from felix.settings import Settings, SettingsError
from felix.web import serve

__all__ = ["main"]

logger = logging.getLogger("felix")


async def run_server(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully.

    Open WebSockets drain for up to ``settings.shutdown_grace`` seconds and
    are closed with 1001; the function then returns.
    """
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
    # The receiver is installed before the port opens, so a signal that
    # arrives as soon as the server answers is already ours.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def wait_for_signal() -> None:
            async for signum in signals:
                logger.info("%s received: shutting down", signal.Signals(signum).name)
                return

        async with open_hub(settings) as hub:
            await serve(hub, settings, shutdown_trigger=wait_for_signal)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``felix`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Handed over whole: the bench has its own parser and --help.
        return bench.main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="felix", description="Real-time event streams for multi-agent workflows."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve", help="run the server (settings from FELIX_* variables)"
    )
    serve_parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve_parser.add_argument(
        "--broker",
        help="memory (default) or a Redis URL shared by several nodes (FELIX_BROKER)",
    )
    demo_parser = commands.add_parser(
        "demo", help="run a simulated multi-agent workflow against an embedded server"
    )
    demo_parser.add_argument(
        "--delay", type=float, default=0.15, help="seconds between published events"
    )
    add_commands(commands)
    bench_parser = commands.add_parser(
        "bench",
        help="benchmark Felix against the seed-style server (felix bench --help)",
        add_help=False,
    )
    bench_parser.add_argument("options", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command not in ("serve", "demo"):
        status: int = args.func(args)
        return status
    try:
        if args.command == "serve":
            settings = Settings.from_env(host=args.host, port=args.port, broker=args.broker)
        else:
            settings = Settings.from_env(host="127.0.0.1", port=0, api_keys=())
    except SettingsError as error:
        parser.error(str(error))
    configure_logging(
        settings.log_level if args.command == "serve" else "WARNING", settings.log_format
    )
    if args.command == "serve":
        try:
            trio.run(run_server, settings)
        except BrokerUnavailable as error:
            logger.error("cannot start: %s", error)
            return 1
        return 0
    return trio.run(run_demo, settings, args.delay)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
