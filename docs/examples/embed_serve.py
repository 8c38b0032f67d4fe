"""Serve a hub over HTTP and WebSocket from your own Trio program."""

from __future__ import annotations

import functools
import json

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

import felix
import felix.web
from felix._patches import trio_websocket_leaks

# trio-websocket 0.12.2 clients otherwise keep their socket open, until
# garbage collection, after a refused handshake or a close sent by the
# server, such as the 1001 below; see the stack-fixes reference page.
trio_websocket_leaks.install()


async def main() -> None:
    # Port 0 lets the OS pick a free port; serve() reports the real one.
    settings = felix.Settings(port=0, shutdown_grace=2.0)
    stop = trio.Event()
    async with felix.open_hub(settings) as hub, trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            functools.partial(felix.web.serve, hub, settings, shutdown_trigger=stop.wait)
        )
        base = binds[0]
        print(f"serving on {base}")

        # The program and remote clients share one hub: create the workflow
        # in-process, let a remote client watch it.
        workflow = await hub.create_workflow(workflow_id="embedded-1")
        ws_url = base.replace("http://", "ws://") + "/api/v1/ws/workflows/embedded-1"
        async with open_websocket_url(ws_url) as ws:
            print("client got", json.loads(await ws.get_message())["type"])
            await hub.send_workflow_event(
                workflow.workflow_id, "workflow_status", {"status": "running"}
            )
            event = json.loads(await ws.get_message())
            print("client got", event["type"], event["status"], "seq", event["seq"])

            async with httpx.AsyncClient(base_url=base) as http:
                response = await http.get("/api/v1/workflows/embedded-1")
                print("REST says", response.status_code, response.json()["status"])

            # Setting the event is what SIGTERM does in `felix serve`: open
            # WebSockets drain, then close with 1001, then serve() returns.
            stop.set()
            try:
                await ws.get_message()
            except ConnectionClosed as closed:
                if closed.reason is not None:
                    print("client closed with", closed.reason.code, closed.reason.reason)


if __name__ == "__main__":
    trio.run(main)
