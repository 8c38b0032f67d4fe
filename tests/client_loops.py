"""Run the same client code under Trio and under asyncio against a real server.

The servers of the suite run in the test's Trio loop (tests/conftest.py). A
test parametrized with the ``loop`` fixture writes its client side as one
coroutine function using anyio only, and hands it to :meth:`Loop.run`: under
``"trio"`` it is awaited in the test's own loop; under ``"asyncio"`` it runs
with :func:`asyncio.run` in a worker thread while the Trio loop keeps serving.
Server-side steps in the middle of a client body (restart the web layer,
publish through the hub) go through :meth:`Loop.server`, which runs them in
the Trio loop whichever loop the body is on.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import pytest
import trio

T = TypeVar("T")

LOOPS = ["trio", "asyncio"]


@attrs.define
class Loop:
    """Which event loop the client side of a test runs on."""

    name: str
    token: trio.lowlevel.TrioToken = attrs.field(factory=trio.lowlevel.current_trio_token)

    async def run(self, body: Callable[[], Awaitable[T]]) -> T:
        """Run the client body on this loop and return what it returns."""
        if self.name == "trio":
            return await body()

        async def main() -> T:
            return await body()

        # Not abandoned on cancel: the thread ends when its bounded body does.
        return await trio.to_thread.run_sync(asyncio.run, main())

    async def server(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)`` in the test's Trio loop, from a client body."""
        if self.name == "trio":
            return await fn(*args)
        call = functools.partial(trio.from_thread.run, fn, *args, trio_token=self.token)
        return await asyncio.to_thread(call)

    async def server_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the plain function ``fn(*args)`` in the test's Trio loop, from a client body."""
        if self.name == "trio":
            return fn(*args)
        call = functools.partial(trio.from_thread.run_sync, fn, *args, trio_token=self.token)
        return await asyncio.to_thread(call)


@pytest.fixture(params=LOOPS)
async def loop(request: pytest.FixtureRequest) -> Loop:
    """Each test using it runs twice: its client on Trio, then on asyncio."""
    return Loop(str(request.param))
