"""Use a Felix hub inside a Trio program, with no web server and no sockets."""

from __future__ import annotations

import json

import trio

import felix


async def watch(
    hub: felix.Hub,
    workflow_id: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with hub.subscribe(workflow_id) as subscription:
        # Reporting "started" only once subscribed means the producer below
        # cannot publish an event this watcher would miss.
        task_status.started()
        async for text in subscription:
            event = json.loads(text)
            print(f"  watcher got {event['type']:<15} seq={event.get('seq')}")
        print(f"  stream ended: {subscription.close_code} {subscription.close_reason}")


async def main() -> None:
    async with felix.open_hub() as hub:
        workflow = await hub.create_workflow(task="Summarise the incident report")
        workflow_id = workflow.workflow_id
        print(f"created {workflow_id} ({workflow.status})")

        async with trio.open_nursery() as nursery:
            await nursery.start(watch, hub, workflow_id)

            await hub.send_workflow_event(
                workflow_id,
                "agent_spawned",
                {"agent_id": "reader-1", "agent_type": "research", "spawn_time": 0.1},
            )
            # The seed's ConnectionManager API: the event still gets a seq and
            # enters the history, like any other publish.
            await hub.broadcast_to_workflow(
                workflow_id,
                {
                    "type": "agent_output",
                    "agent_id": "reader-1",
                    "content": "The outage began with an expired certificate.",
                    "confidence": 0.9,
                },
            )
            # A system event reaches every open stream, without seq or workflow_id.
            delivered = await hub.broadcast_to_all({"type": "notice", "message": "hello"})
            print(f"notice queued for {delivered} connection(s)")

            for info in hub.connections():
                print(f"open connection {info.connection_id} on {info.workflow_id}")

            await hub.send_workflow_event(workflow_id, "completed", {"result": {"pages": 1}})

        # The terminal event ended the watcher's stream; the state stays
        # readable until the retention period runs out.
        final = await hub.get_workflow(workflow_id)
        print(f"final status {final.status}, last_seq {final.last_seq}, result {final.result}")

        try:
            await hub.send_workflow_event(workflow_id, "synthesis", {"content": "too late"})
        except felix.WorkflowConflict as error:
            print(f"refused with {error.http_status}: {error.message}")


if __name__ == "__main__":
    trio.run(main)
