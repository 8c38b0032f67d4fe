"""The web layer: HTTP and WebSocket traffic into hub calls; no workflow state.

- :mod:`felix.web.edge` — framework-free ASGI that every request passes: the route
  table with each route's policy, one ``authenticate``, one error renderer, one body
  reader, the workflow-id check, and the hot paths' handlers (publish, WebSocket).
- :mod:`felix.web.routes` — what Quart-Trio serves: REST, metrics, OpenAPI, dashboard.
- :mod:`felix.web.hypercorn` — the only code touching Hypercorn's internals.
"""

from __future__ import annotations

from felix.web.app import create_app, hypercorn_config, serve

__all__ = ["create_app", "hypercorn_config", "serve"]
