"""What the REST calls answer, as small frozen classes (shared by the REST client and runs)."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["Published", "SubscribeToken", "WorkflowPage"]


@attrs.frozen
class Published:
    """What a publish answered: how many events were applied and their seq range."""

    accepted: int
    first_seq: int | None
    last_seq: int | None


@attrs.frozen
class WorkflowPage:
    """One page of ``GET /api/v1/workflows``: the workflows and how many matched."""

    workflows: list[dict[str, Any]]
    total: int


@attrs.frozen
class SubscribeToken:
    """A subscribe token for one workflow's WebSocket (``?token=``) and its expiry."""

    token: str
    expires_at: str
