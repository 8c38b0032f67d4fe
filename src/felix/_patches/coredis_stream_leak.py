"""Library fix: coredis leaks six anyio memory streams per failed connection attempt.

Written against coredis 6.9.0 (pinned ``<7``). **Process-wide**: :func:`install`
wraps ``BaseConnection.run`` for every coredis user in the process; the wrapper
only closes streams that coredis itself would close on success, so it changes
nothing else. Installed by ``open_redis_broker``, never on import.

coredis 6.9's ``BaseConnection`` creates its write, push and streamed-message
buffers (anyio memory object streams) in ``__init__`` and closes them only in
``run()``'s ``async with`` — which it enters after ``_connect()`` succeeds. A
connection refused (Redis down or restarting) therefore leaves all six
unclosed: one ``ResourceWarning`` each at garbage collection, every time the
pool tries again. While Redis is away a node tries often, so the warnings
(and, with ``-W error``, failures) pile up.

The fix wraps ``run()``: whatever makes it end, the six streams are closed.
Closing an anyio memory stream twice is harmless, so it stays correct once
coredis closes them itself — then this module can go (see
docs/reference/stack-fixes.md; ``tests/redis/test_stack_fix_coredis.py``
fails without it).
"""

from __future__ import annotations

import functools
from typing import Any

from coredis.connection._base import BaseConnection

__all__ = ["install"]

_STREAMS = (
    "_write_buffer_in",
    "_write_buffer_out",
    "_push_message_buffer_in",
    "_push_message_buffer_out",
    "_streamed_message_buffer_in",
    "_streamed_message_buffer_out",
)


def install() -> None:
    """Patch ``BaseConnection.run`` once; later calls do nothing."""
    original = BaseConnection.run
    if getattr(original, "_felix_closes_streams", False):
        return

    @functools.wraps(original)
    async def run(self: BaseConnection, *args: Any, **kwargs: Any) -> None:
        try:
            await original(self, *args, **kwargs)
        finally:
            for name in _STREAMS:
                stream = getattr(self, name, None)
                if stream is not None:
                    stream.close()

    run._felix_closes_streams = True  # type: ignore[attr-defined]
    BaseConnection.run = run  # type: ignore[method-assign]
