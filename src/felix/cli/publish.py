"""``felix publish WF_ID TYPE key=value …``: publish one event."""

from __future__ import annotations

import argparse

from felix.cli._common import (
    Subparsers,
    UsageError,
    add_server_arguments,
    client,
    parse_fields,
    run_command,
)

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Subparsers) -> None:
    """Add ``felix publish``."""
    publish = subparsers.add_parser(
        "publish",
        help="publish one event to a workflow",
        description=(
            "Publish an event of TYPE with key=value fields. A value that parses as JSON "
            "is used as such (confidence=0.8 is a number, final=true a boolean, "
            "result='{\"a\": 1}' an object); anything else is a string."
        ),
    )
    publish.add_argument("workflow_id", metavar="WF_ID", help="the workflow to publish to")
    publish.add_argument("event_type", metavar="TYPE", help="e.g. agent_output, synthesis")
    publish.add_argument("fields", nargs="*", metavar="key=value", help="the event's fields")
    add_server_arguments(publish)
    publish.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Publish one event; prints its seq."""
    return run_command("publish", _publish, args)


async def _publish(args: argparse.Namespace) -> int:
    try:
        fields = parse_fields(args.fields)
    except ValueError as error:
        raise UsageError(str(error)) from None
    event = {**fields, "type": args.event_type}
    async with client(args) as felix:
        result = await felix.publish(args.workflow_id, event)
    print(f"published {args.event_type} to {args.workflow_id} as seq {result.first_seq}")
    return 0
