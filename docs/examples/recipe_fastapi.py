"""A FastAPI service whose request handlers start runs and publish them to Felix."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from local_felix import local_felix
from pydantic import BaseModel

from felix.client import FelixClient, Gap, open_workflow_stream


class Job(BaseModel):
    question: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One client (one connection pool) for the whole service.
    async with FelixClient(os.environ["FELIX_URL"], os.environ.get("FELIX_API_KEY")) as client:
        app.state.felix = client
        app.state.jobs = set()
        yield
        # Let the runs still going finish (each ends its workflow) before the pool closes.
        await asyncio.gather(*app.state.jobs)


app = FastAPI(lifespan=lifespan)


async def answer(client: FelixClient, question: str, started: asyncio.Future[str]) -> None:
    """The agents' work, published as it happens."""
    async with client.run(task=question) as run:
        started.set_result(run.workflow_id)
        await run.agent_spawned("search-1", "search")
        await asyncio.sleep(0.01)  # the real work goes here
        await run.agent_output("search-1", f"two sources on {question!r}", confidence=0.7)
        await run.synthesis("yes, with caveats", final=True)
        run.result = {"answer": "yes, with caveats"}


@app.post("/jobs", status_code=202)
async def start_job(job: Job, request: Request) -> dict[str, str]:
    """Start a job in the background and answer at once with its workflow to follow."""
    client: FelixClient = request.app.state.felix
    started = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(answer(client, job.question, started))
    request.app.state.jobs.add(task)
    task.add_done_callback(request.app.state.jobs.discard)
    # Answer once the workflow exists (so the caller can follow it at once),
    # or with the error that kept it from starting.
    await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        task.result()
    return {"workflow_id": started.result()}


async def main() -> None:
    # In production: FELIX_URL=… uvicorn recipe_fastapi:app. Here the app is
    # called in-process, and the job followed the way a client of it would.
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            response = await http.post("/jobs", json={"question": "is it safe?"})
            workflow_id = response.json()["workflow_id"]
            print("started", workflow_id)
            async with open_workflow_stream(os.environ["FELIX_URL"], workflow_id, after=0) as s:
                async for event in s:
                    print(" ", event.type if isinstance(event, Gap) else event["type"])


if __name__ == "__main__":
    with local_felix() as base_url:
        os.environ["FELIX_URL"] = base_url
        asyncio.run(main())
