"""Run Felix's app under Hypercorn with a configuration of your own."""

from __future__ import annotations

import functools

import httpx
import hypercorn.trio
import trio

import felix
import felix.web
import felix.web.hypercorn


async def main() -> None:
    # Felix's fixes to Hypercorn: write deadlines, dead peers, direct writes.
    felix.web.hypercorn.install()
    settings = felix.Settings(port=0)
    async with felix.open_hub(settings) as hub, trio.open_nursery() as nursery:
        app = felix.web.create_app(hub, settings)
        # Start from Felix's configuration: it carries the redacting access
        # logger, the client frame limit and the ping interval.
        config = felix.web.hypercorn_config(settings)
        config.bind = ["127.0.0.1:0"]
        stop = trio.Event()

        async def shutdown_trigger() -> None:
            await stop.wait()
            # create_app() does not drain WebSockets by itself; serve() does
            # this for you, a hand-made trigger must do it.
            await hub.shutdown()

        binds: list[str] = await nursery.start(
            functools.partial(
                hypercorn.trio.serve,
                app,
                config,
                shutdown_trigger=shutdown_trigger,
            )
        )
        async with httpx.AsyncClient(base_url=binds[0]) as http:
            health = await http.get("/healthz")
            print("healthz:", health.status_code, health.json())
            created = await http.post("/api/v1/workflows", json={"task": "under Hypercorn"})
            print("created:", created.status_code, created.json()["workflow_id"])
        stop.set()


if __name__ == "__main__":
    trio.run(main)
