"""Felix: real-time event streams for multi-agent workflows, on Trio actors.

Embed it in any Trio program::

    async with felix.open_hub() as hub:
        wf = await hub.create_workflow(task="research")
        await hub.send_workflow_event(wf.workflow_id, "workflow_status", {"status": "running"})

or serve it over HTTP and WebSocket with :func:`felix.web.serve`.
"""

from __future__ import annotations

from felix._core.events import (
    STATUSES,
    TERMINAL_STATUSES,
    WORKFLOW_EVENT_TYPES,
    Event,
    Frame,
    validate_event,
)
from felix._core.workflow import Replay, WorkflowState
from felix._errors import (
    AuthenticationError,
    BadRequest,
    CapacityError,
    EventTooLarge,
    FelixError,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InvalidEvent,
    OriginNotAllowed,
    RateLimited,
    ShuttingDown,
    WorkflowConflict,
    WorkflowExists,
    WorkflowNotFound,
)
from felix._runtime.actor import InboxFull, PublishResult
from felix._runtime.hub import Hub, Workflow, open_hub
from felix._runtime.subscription import ConnectionInfo, Subscription
from felix.settings import Settings, SettingsError

__version__ = "0.1.0"

__all__ = [
    "STATUSES",
    "TERMINAL_STATUSES",
    "WORKFLOW_EVENT_TYPES",
    "AuthenticationError",
    "BadRequest",
    "CapacityError",
    "ConnectionInfo",
    "Event",
    "EventTooLarge",
    "FelixError",
    "Frame",
    "Hub",
    "IdempotencyInProgress",
    "IdempotencyKeyReused",
    "InboxFull",
    "InvalidEvent",
    "OriginNotAllowed",
    "PublishResult",
    "RateLimited",
    "Replay",
    "Settings",
    "SettingsError",
    "ShuttingDown",
    "Subscription",
    "Workflow",
    "WorkflowConflict",
    "WorkflowExists",
    "WorkflowNotFound",
    "WorkflowState",
    "__version__",
    "open_hub",
    "validate_event",
]
