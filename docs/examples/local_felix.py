"""A Felix server for the recipes to talk to: $FELIX_URL, or one started here."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio

import felix
import felix.web


@contextmanager
def local_felix() -> Iterator[str]:
    """Yield a Felix server's base URL: ``$FELIX_URL`` when set, otherwise a
    development-mode server on a free port, run in a background thread until
    the block ends."""
    if url := os.environ.get("FELIX_URL"):
        yield url
        return
    started = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        settings = felix.Settings(port=0, shutdown_grace=1.0)
        stop = trio.Event()
        async with felix.open_hub(settings) as hub, trio.open_nursery() as nursery:
            serving = functools.partial(felix.web.serve, hub, settings, shutdown_trigger=stop.wait)
            binds: list[str] = await nursery.start(serving)
            state.update(url=binds[0], stop=stop, token=trio.lowlevel.current_trio_token())
            started.set()

    thread = threading.Thread(target=trio.run, args=(serve,), name="local-felix")
    thread.start()
    try:
        if not started.wait(30):
            raise RuntimeError("the local Felix server did not start")
        yield state["url"]
    finally:
        if "stop" in state:
            trio.from_thread.run_sync(state["stop"].set, trio_token=state["token"])
        thread.join(30)


if __name__ == "__main__":
    with local_felix() as base_url:
        print(f"a Felix server ran at {base_url}")
