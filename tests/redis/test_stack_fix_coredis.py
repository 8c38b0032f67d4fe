"""felix._patches.coredis_stream_leak: a refused Redis connection leaks no streams.

Needs no redis-server: the point is a port nobody listens on.
"""

from __future__ import annotations

import gc
import socket
import warnings

import coredis
import pytest
import trio
from coredis.connection._base import BaseConnection

from felix._patches import coredis_stream_leak


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connections to it are refused


def _resource_warnings_of_a_refused_connection() -> list[str]:
    async def attempt() -> None:
        client: coredis.Redis[str] = coredis.Redis(port=_closed_port(), decode_responses=True)
        with pytest.raises(Exception):  # noqa: B017, PT011 - whichever way coredis reports it
            async with client:
                await client.ping()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trio.run(attempt)
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def test_without_the_fix_a_refused_connection_leaks_streams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    coredis_stream_leak.install()
    unpatched = BaseConnection.run.__wrapped__  # type: ignore[attr-defined]
    monkeypatch.setattr(BaseConnection, "run", unpatched)
    leaks = _resource_warnings_of_a_refused_connection()
    # If this fails, coredis closes its streams itself now: drop the fix.
    assert any("MemoryObject" in leak for leak in leaks), leaks


def test_with_the_fix_nothing_leaks() -> None:
    coredis_stream_leak.install()
    assert _resource_warnings_of_a_refused_connection() == []
