"""The public names of ``felix.client``: removing or renaming one breaks users."""

from __future__ import annotations

import felix.client

#: Written down from src/felix/client/__init__.py.
CLIENT_NAMES = [
    "CLIENT_LIMITS",
    "DEFAULT_BACKOFF",
    "ApiError",
    "Backoff",
    "ClientError",
    "ConnectionFailed",
    "Event",
    "FelixClient",
    "Gap",
    "PublishMode",
    "Published",
    "ReconnectFailed",
    "Run",
    "StreamError",
    "StreamItem",
    "StreamNotFound",
    "StreamRefused",
    "StreamStatistics",
    "StreamUnauthorized",
    "SubscribeToken",
    "SyncFelixClient",
    "SyncRun",
    "Transport",
    "WorkflowPage",
    "WorkflowStream",
    "is_terminal",
    "open_workflow_stream",
]


def test_client_exports_exactly_its_public_names() -> None:
    assert sorted(felix.client.__all__) == sorted(CLIENT_NAMES)
    for name in CLIENT_NAMES:
        assert hasattr(felix.client, name), name
